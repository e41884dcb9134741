"""conveyor.sse(job): the chunk stream as Server-Sent Events through a real Starlette app
(httpx's TestClient), a real worker and a real Redis."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import conveyor
from conveyor import Conveyor
from conveyor.errors import ConfigurationError
from tests.conftest import fast, worker_thread


def events(body: str) -> list[dict[str, str]]:
    """The messages of an SSE body (comment blocks, the keep-alives, left out)."""
    out = []
    for block in body.strip().split("\n\n"):
        if block.startswith(":"):
            continue
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        out.append(fields)
    return out


def web(app: Conveyor, keepalive: float = 15.0) -> httpx.AsyncClient:
    async def stream(request: Request) -> Response:
        job = app.job(request.path_params["job_id"])
        return conveyor.sse(
            job, last_event_id=request.headers.get("last-event-id"), keepalive=keepalive
        )

    site = Starlette(routes=[Route("/jobs/{job_id}/stream", stream)])
    return httpx.AsyncClient(transport=httpx.ASGITransport(site), base_url="http://test")


async def test_sse_streams_every_chunk_then_the_end_and_resumes_after_last_event_id(
    app: Conveyor,
) -> None:
    @app.task
    def summarize(text: str) -> Iterator[str]:
        yield from text.split()

    async with web(app) as client:
        with worker_thread(app, fast()):
            job = summarize.enqueue("the quick brown fox")
            response = await client.get(f"/jobs/{job.id}/stream")
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["cache-control"] == "no-cache"
            got = events(response.text)
            chunks = [e for e in got if e["event"] == "chunk"]
            assert [json.loads(e["data"]) for e in chunks] == ["the", "quick", "brown", "fox"]
            assert got[-1] == {"event": "end", "data": '{"state":"done"}'}
            resumed = await client.get(
                f"/jobs/{job.id}/stream", headers={"Last-Event-ID": chunks[1]["id"]}
            )
            again = [json.loads(e["data"]) for e in events(resumed.text) if e["event"] == "chunk"]
            assert again == ["brown", "fox"]


async def test_sse_says_restart_between_runs_and_the_error_of_a_dead_job(app: Conveyor) -> None:
    from conveyor import Backoff, current_job

    @app.task(retries=1, backoff=Backoff(base=0.1, jitter=False))
    def doomed() -> Iterator[int]:
        yield current_job().attempt
        raise ValueError("bad document")

    async with web(app) as client:
        with worker_thread(app, fast()):
            job = doomed.enqueue()
            got = events((await client.get(f"/jobs/{job.id}/stream")).text)
            assert [e["event"] for e in got] == ["chunk", "restart", "chunk", "end"]
            assert [got[0]["data"], got[2]["data"]] == ["1", "2"]
            end: dict[str, Any] = json.loads(got[-1]["data"])
            assert end["state"] == "dead" and "bad document" in end["error"]


async def test_sse_says_restart_when_a_run_with_the_same_attempt_and_delivery_follows(
    app: Conveyor,
) -> None:
    from conveyor.streams import append

    @app.task
    def gen() -> Iterator[int]:
        yield 1

    job = gen.enqueue()  # no worker: these entries stand for a run and its replay
    keys = app.keys(app.default_queue)
    for run in ("1.1.aaaa", "1.1.bbbb"):
        app.broker.call(append(keys, job.id, run, 0, "c", b'"x"', 60_000))
        app.broker.call(append(keys, job.id, run, 1, "end", "ok", 60_000))
    job.cancel()
    async with web(app) as client:
        got = events((await client.get(f"/jobs/{job.id}/stream")).text)
    assert [e["event"] for e in got] == ["chunk", "restart", "chunk", "end"]
    assert json.loads(got[1]["data"]) == {"attempt": 1}


def test_sse_refuses_a_malformed_last_event_id(app: Conveyor) -> None:
    with pytest.raises(ConfigurationError, match="Last-Event-ID"):
        conveyor.sse(app.job("default:n:1-0"), last_event_id="</script>")


async def test_sse_sends_keep_alive_comments_while_the_job_is_silent(app: Conveyor) -> None:
    @app.task
    async def thinks() -> AsyncIterator[str]:
        await asyncio.sleep(0.4)
        yield "finally"

    async with web(app, keepalive=0.05) as client:
        with worker_thread(app, fast()):
            job = thinks.enqueue()
            body = (await client.get(f"/jobs/{job.id}/stream")).text
    assert body.count(": keep-alive\n\n") >= 3
    got = events(body)
    assert [e["event"] for e in got] == ["chunk", "end"] and got[0]["data"] == '"finally"'
    with pytest.raises(ConfigurationError, match="keepalive"):
        conveyor.sse(job, keepalive=0)
