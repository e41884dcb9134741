"""``conveyor.sse(job)``: a job's streamed chunks as a Server-Sent Events response.

For Starlette and FastAPI (``return conveyor.sse(job)`` from an endpoint); ``sse_events``
gives the body alone (bytes) for any other ASGI framework. Starlette is the optional extra
``conveyor-queue[sse]``, imported only when ``sse()`` is called.

The events: ``chunk`` per chunk (``data`` its JSON, ``id`` its entry id, so a browser that
reconnects sends it back as Last-Event-ID and resumes after it), ``restart`` when a retry or
a re-run after a crash starts streaming again from its first chunk (clear what was shown),
and one ``end`` when the job has ended (``data``: its state and, if it failed, the error;
for a later step of a workflow that stopped before it, ``unknown`` and the workflow's
state, step and error under ``workflow``).
A comment line (``: keep-alive``) is sent after each ``keepalive`` seconds of silence.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

from .errors import ConfigurationError
from .job import Job, JobState
from .keys import is_entry_id
from .wire import encode_json

if TYPE_CHECKING:
    from starlette.responses import StreamingResponse

#: Headers that keep proxies (nginx) from buffering the stream or caching it.
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
#: Seconds of silence before a keep-alive comment: below the usual 30-60 s proxy timeouts.
KEEPALIVE = 15.0


def sse(
    job: Job[Any],
    *,
    last_event_id: str | None = None,
    headers: Mapping[str, str] | None = None,
    keepalive: float = KEEPALIVE,
) -> StreamingResponse:
    """A ``text/event-stream`` response streaming the job's chunks until it ends.

    ``last_event_id``: the request's ``Last-Event-ID`` header, to resume after that chunk.
    ``keepalive``: seconds of silence (a job still queued, or thinking) after which a comment
    line is sent, so proxies and browsers do not drop the connection as idle.
    """
    try:
        from starlette.responses import StreamingResponse
    except ImportError as exc:  # the extra is not installed
        raise ConfigurationError(
            "conveyor.sse() needs Starlette: pip install 'conveyor-queue[sse]' (FastAPI "
            "brings it too)"
        ) from exc
    return StreamingResponse(
        sse_events(job, last_event_id=last_event_id, keepalive=keepalive),
        media_type="text/event-stream",
        headers={**HEADERS, **(headers or {})},
    )


def sse_events(
    job: Job[Any], *, last_event_id: str | None = None, keepalive: float = KEEPALIVE
) -> AsyncIterator[bytes]:
    """The SSE body: one message per chunk, ``restart`` between runs, ``end`` at the end,
    a comment after each ``keepalive`` seconds of silence. A malformed ``last_event_id`` is
    refused here, before any response starts."""
    after = last_event_id or "0-0"
    if not is_entry_id(after):
        raise ConfigurationError(
            f"Last-Event-ID {after[:40]!r} is not a chunk id of this stream (ids look "
            "like '1700000000000-0')"
        )
    if not keepalive > 0:
        raise ConfigurationError(f"keepalive must be a number of seconds > 0, not {keepalive!r}")
    return _with_keepalive(_events(job, after), keepalive)


async def _events(job: Job[Any], after: str) -> AsyncIterator[bytes]:
    run: str | None = None
    async for chunk in job.chunks_async(after=after):
        if run is not None and chunk.run != run:
            yield message("restart", encode_json({"attempt": chunk.attempt}))
        run = chunk.run
        yield message("chunk", chunk.raw, chunk.id)
    info = await job.info_async()
    end: dict[str, Any] = {"state": info.state.value}
    if info.record is not None and info.record.error:
        end["error"] = info.record.error
    if info.state is JobState.UNKNOWN and job._workflow is not None:
        end["workflow"] = await job._workflow._end_async()  # why this step never came
    yield message("end", encode_json(end))


async def _with_keepalive(body: AsyncIterator[bytes], seconds: float) -> AsyncIterator[bytes]:
    """``body``, with a comment line whenever it is silent for ``seconds``. The body is read
    by a task of its own into a small queue (a timeout on the read itself would cancel the
    body); the task ends with the response, a client that went away included."""
    queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue(maxsize=64)

    async def pump() -> None:
        try:
            async for part in body:
                await queue.put(part)
            await queue.put(None)
        except Exception as exc:  # handed to the response, which fails with it
            await queue.put(exc)

    reader = asyncio.create_task(pump())
    try:
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), seconds)
            except asyncio.TimeoutError:
                yield b": keep-alive\n\n"
                continue
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader


def message(event: str, data: bytes, event_id: str | None = None) -> bytes:
    """One SSE message; ``data`` is compact JSON, so it is one line."""
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {event}\ndata: ".encode() + data + b"\n\n"
