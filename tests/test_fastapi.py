"""conveyor.fastapi against a real worker on a real Redis, called with httpx (the lifespan
run by asgi-lifespan, as a server runs it)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
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


def sse_events(body: str) -> list[dict[str, str]]:
    """The messages of an SSE body (comment lines, the keep-alives, left out)."""
    blocks = [b for b in body.strip().split("\n\n") if b and not b.startswith(":")]
    return [dict(line.split(": ", 1) for line in b.splitlines()) for b in blocks]


async def test_events_route_streams_a_jobs_chunks_as_sse_and_resumes(app: Conveyor) -> None:
    @app.task
    def tokens(text: str) -> Iterator[str]:
        for word in text.split():
            time.sleep(0.01)
            yield word
        return text

    api = build(app, lifespan=lifespan(app))
    async with client_for(api) as client:
        job = await tokens.enqueue_async("streamed from a worker")
        with worker_thread(app, fast()):
            response = await client.get(f"/jobs/{job.id}/events")
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["cache-control"] == "no-cache"
            got = sse_events(response.text)
            chunks = [e for e in got if e["event"] == "chunk"]
            assert [json.loads(e["data"]) for e in chunks] == ["streamed", "from", "a", "worker"]
            assert got[-1] == {"event": "end", "data": '{"state":"done"}'}
            resumed = await client.get(
                f"/jobs/{job.id}/events", headers={"Last-Event-ID": chunks[1]["id"]}
            )
            again = [json.loads(e["data"]) for e in sse_events(resumed.text)]
            assert again == ["a", "worker", {"state": "done"}]
        assert (await poll(client, job.id))["result"] == "streamed from a worker"


async def test_events_route_refuses_bad_ids_unknown_jobs_and_bad_last_event_ids(
    app: Conveyor,
) -> None:
    api = build(app, lifespan=lifespan(app))
    async with client_for(api) as client:
        bad = await client.get("/jobs/not-a-job-id/events")
        assert bad.status_code == 400 and "not a Conveyor job id" in bad.json()["detail"]
        unknown = await client.get("/jobs/default:n:1-0/events")
        assert unknown.status_code == 404 and "not added yet" in unknown.json()["detail"]
        job_id = (await client.post("/square/3")).json()["job_id"]
        malformed = await client.get(
            f"/jobs/{job_id}/events", headers={"Last-Event-ID": "</script>"}
        )
        assert malformed.status_code == 400 and "Last-Event-ID" in malformed.json()["detail"]
