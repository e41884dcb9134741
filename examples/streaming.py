"""Streamed partial results: a task yields tokens, a reader shows them as they come.

- A generator task (``def`` or ``async def`` with ``yield``) streams each chunk it yields to
  a per-job stream in Redis; ``current_job().emit(chunk)`` does the same from a plain task.
- ``job.stream()`` / ``async for chunk in job.stream_async()`` read the chunks from the
  start or live, in order, once each, and end when the job ends; a reader attaching after
  the end reads them all until the job's ``result_ttl`` passes.
- ``conveyor.sse(job)`` serves the same chunks as Server-Sent Events from a Starlette or
  FastAPI endpoint (here it is read through httpx, as a browser's EventSource would).

Run it:  python examples/streaming.py
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import sys
from collections.abc import AsyncIterator

from conveyor import Conveyor, current_job
from conveyor.testing import delete_namespace, worker_task

NAMESPACE = os.environ.get("EXAMPLE_NAMESPACE") or f"example-streaming-{secrets.token_hex(3)}"
app = Conveyor(namespace=NAMESPACE)


@app.task
async def summarize(text: str) -> AsyncIterator[str]:
    """Stands in for an LLM call: one token at a time."""
    for word in text.split():
        await asyncio.sleep(0.01)
        yield word


@app.task
def index(paths: list[str]) -> int:
    """A plain task reporting what it did as it goes."""
    for path in paths:
        current_job().emit({"indexed": path})
    return len(paths)


async def main() -> int:
    print(f"namespace {NAMESPACE}")
    text = "partial results reach the reader while the task still runs"
    ok = True
    try:
        async with worker_task(app):
            job = await summarize.enqueue_async(text)
            tokens = [token async for token in job.stream_async()]  # live
            print("streamed live:", " ".join(tokens))
            ok &= tokens == text.split()
            again = [token async for token in job.stream_async()]  # after the end
            print(f"read again after the end: {len(again)} chunks")
            ok &= again == tokens

            indexed = await index.enqueue_async(["a.txt", "b.txt"])
            events = [event async for event in indexed.stream_async()]
            print("emitted:", events, "result:", await indexed.result_async(timeout=10))
            ok &= events == [{"indexed": "a.txt"}, {"indexed": "b.txt"}]

            ok &= await serve_over_sse(text)
    finally:
        delete_namespace(app)
    print("tokens streamed live, after the end and over SSE" if ok else "UNEXPECTED OUTCOME")
    return 0 if ok else 1


async def serve_over_sse(text: str) -> bool:
    """The web side: a Starlette endpoint returning conveyor.sse(job) (extra 'sse')."""
    try:
        import httpx
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import Response
        from starlette.routing import Route
    except ImportError:
        print("(SSE part skipped: pip install 'conveyor-queue[sse]' httpx)")
        return True
    import conveyor

    async def stream(request: Request) -> Response:
        job = app.job(request.path_params["job_id"])
        return conveyor.sse(job, last_event_id=request.headers.get("last-event-id"))

    site = Starlette(routes=[Route("/jobs/{job_id}/stream", stream)])
    transport = httpx.ASGITransport(site)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        job = await summarize.enqueue_async(text)
        response = await client.get(f"/jobs/{job.id}/stream")
    lines = [line for line in response.text.splitlines() if line.startswith(("event", "data"))]
    print("over SSE:", " | ".join(lines[:4]), "...", " | ".join(lines[-2:]))
    return lines[-2:] == ["event: end", 'data: {"state":"done"}'] and len(lines) == 2 * (
        len(text.split()) + 1
    )


if __name__ == "__main__":
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    sys.exit(asyncio.run(main()))
