"""conveyor.fastapi against a real worker on a real Redis, called with httpx (the lifespan
run by asgi-lifespan, as a server runs it)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI, Request

from conveyor import ConfigurationError, Conveyor
from conveyor.fastapi import ConveyorApp, jobs_router, lifespan
from tests.conftest import fast, worker_thread


def build(app: Conveyor, **kwargs: Any) -> FastAPI:
    @app.task
    def square(x: int) -> int:
        return x * x

    @app.task(retries=0)
    def broken() -> None:
        raise ValueError("bad input")

    api = FastAPI(**kwargs)
    api.include_router(jobs_router(), prefix="/jobs")

    @api.post("/square/{x}", status_code=202)
    async def post_square(x: int, conveyor: ConveyorApp) -> dict[str, str]:
        assert conveyor is app
        job = await square.enqueue_async(x)
        return {"job_id": job.id}

    @api.post("/broken", status_code=202)
    def post_broken(conveyor: ConveyorApp) -> dict[str, str]:  # a sync endpoint too
        return {"job_id": broken.enqueue().id}

    return api


@contextlib.asynccontextmanager
async def client_for(api: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with LifespanManager(api) as running:
        transport = httpx.ASGITransport(app=running.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            yield client


async def poll(client: httpx.AsyncClient, job_id: str, timeout: float = 10.0) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        body: dict[str, Any] = (await client.get(f"/jobs/{job_id}")).json()
        if body["state"] in ("done", "dead") or loop.time() > deadline:
            return body
        await asyncio.sleep(0.05)


async def test_post_returns_the_job_id_at_once_and_get_serves_state_and_result(
    app: Conveyor,
) -> None:
    api = build(app, lifespan=lifespan(app))
    async with client_for(api) as client:
        # No worker yet: the POST answers at once and the job waits, queued.
        posted = await client.post("/square/7")
        assert posted.status_code == 202
        job_id = posted.json()["job_id"]
        assert (await client.get(f"/jobs/{job_id}")).json() == {
            "job_id": job_id,
            "state": "queued",
        }
        with worker_thread(app, fast()):
            done = await poll(client, job_id)
            dead = await poll(client, (await client.post("/broken")).json()["job_id"])
        assert done == {"job_id": job_id, "state": "done", "result": 49}
        assert dead["state"] == "dead"
        assert dead["error"] == "ValueError: bad input"
        unknown = await client.get("/jobs/default:n:1-0")
        assert unknown.status_code == 404
        bad = await client.get("/jobs/not-a-job-id")
        assert bad.status_code == 400
        assert "not a Conveyor job id" in bad.json()["detail"]


async def test_an_app_without_the_lifespan_gets_an_error_naming_the_fix(app: Conveyor) -> None:
    api = build(app)  # lifespan forgotten
    transport = httpx.ASGITransport(app=api)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        with pytest.raises(ConfigurationError, match=r"FastAPI\(lifespan=conveyor\.fastapi"):
            await client.post("/square/2")
    assert not app.tasks["square"].app.broker.client.xlen(app.keys("default").stream("normal"))


async def test_lifespan_keeps_an_inner_lifespan_state_and_closes_the_app(app: Conveyor) -> None:
    events: list[str] = []

    @contextlib.asynccontextmanager
    async def mine(server: FastAPI) -> AsyncIterator[dict[str, Any]]:
        events.append("start")
        yield {"model": "loaded"}
        events.append("stop")

    api = build(app, lifespan=lifespan(app, inner=mine))

    @api.get("/model")
    async def model(request: Request, conveyor: ConveyorApp) -> dict[str, str]:
        return {"model": request.state.model, "namespace": conveyor.namespace}

    closed: list[bool] = []
    real_aclose = app.aclose

    async def aclose() -> None:
        closed.append(True)
        await real_aclose()

    app.aclose = aclose  # type: ignore[method-assign]
    async with client_for(api) as client:
        assert (await client.get("/model")).json() == {
            "model": "loaded",
            "namespace": app.namespace,
        }
    assert events == ["start", "stop"]
    assert closed == [True]
