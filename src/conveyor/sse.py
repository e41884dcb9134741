"""``conveyor.sse(job)``: a job's streamed chunks as a Server-Sent Events response.

For Starlette and FastAPI (``return conveyor.sse(job)`` from an endpoint); ``sse_events``
gives the body alone (bytes) for any other ASGI framework. Starlette is the optional extra
``conveyor-queue[sse]``, imported only when ``sse()`` is called.

The events: ``chunk`` per chunk (``data`` its JSON, ``id`` its entry id, so a browser that
reconnects sends it back as Last-Event-ID and resumes after it), ``restart`` when a retry or
a re-run after a crash starts streaming again from its first chunk (clear what was shown),
and one ``end`` when the job has ended (``data``: its state and, if it failed, the error).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

from .errors import ConfigurationError
from .job import Job
from .keys import is_entry_id
from .wire import encode_json

if TYPE_CHECKING:
    from starlette.responses import StreamingResponse

#: Headers that keep proxies (nginx) from buffering the stream or caching it.
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def sse(
    job: Job[Any], *, last_event_id: str | None = None, headers: Mapping[str, str] | None = None
) -> StreamingResponse:
    """A ``text/event-stream`` response streaming the job's chunks until it ends.

    ``last_event_id``: the request's ``Last-Event-ID`` header, to resume after that chunk.
    """
    try:
        from starlette.responses import StreamingResponse
    except ImportError as exc:  # the extra is not installed
        raise ConfigurationError(
            "conveyor.sse() needs Starlette: pip install 'conveyor-queue[sse]' (FastAPI "
            "brings it too)"
        ) from exc
    return StreamingResponse(
        sse_events(job, last_event_id=last_event_id),
        media_type="text/event-stream",
        headers={**HEADERS, **(headers or {})},
    )


def sse_events(job: Job[Any], *, last_event_id: str | None = None) -> AsyncIterator[bytes]:
    """The SSE body: one message per chunk, ``restart`` between runs, ``end`` at the end.
    A malformed ``last_event_id`` is refused here, before any response starts."""
    after = last_event_id or "0-0"
    if not is_entry_id(after):
        raise ConfigurationError(
            f"Last-Event-ID {after[:40]!r} is not a chunk id of this stream (ids look "
            "like '1700000000000-0')"
        )
    return _events(job, after)


async def _events(job: Job[Any], after: str) -> AsyncIterator[bytes]:
    run: tuple[int, int] | None = None
    async for chunk in job.chunks_async(after=after):
        this = (chunk.attempt, chunk.delivery)
        if run is not None and this != run:
            yield message("restart", encode_json({"attempt": chunk.attempt}))
        run = this
        yield message("chunk", chunk.raw, chunk.id)
    info = await job.info_async()
    end: dict[str, Any] = {"state": info.state.value}
    if info.record is not None and info.record.error:
        end["error"] = info.record.error
    yield message("end", encode_json(end))


def message(event: str, data: bytes, event_id: str | None = None) -> bytes:
    """One SSE message; ``data`` is compact JSON, so it is one line."""
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {event}\ndata: ".encode() + data + b"\n\n"
