"""The events stream: a capped per-namespace stream of what workers did to jobs.

Off by default (``Conveyor(events=True)`` or ``events=EventStream(maxlen=...)`` turns it on):
it costs Redis one XADD per job event, sent by each worker from memory in batches (one
script call per batch, append_events.lua), never inside a queue's scripts: the stream has a
hash tag of its own, ``{~events}``, so it may live on another shard than the queues. It is
a live feed for the dashboard and ``conveyor events --follow``, not a record: a worker that
dies loses the events it had not sent, a Redis outage or the memory limit drops them, and
the stream keeps about ``maxlen`` of the latest. Job arguments never go in; errors are
clipped to ERROR_CHARS.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol

import msgspec

from .broker import Broker, Call, command, run_script, text
from .broker.calls import Arg
from .errors import ConfigurationError, ConveyorError
from .hooks import Hooks, JobEvent
from .keys import events_key

if TYPE_CHECKING:
    from .app import Conveyor

log = logging.getLogger("conveyor.events")

#: Characters of an error kept in an event (the job's record keeps it whole).
ERROR_CHARS: Final = 500
#: Events a worker holds for sending at most; past it (Redis unreachable) the oldest go.
BUFFER_CAP: Final = 10_000
#: Events sent in one round trip at most.
BATCH: Final = 500


@dataclass(frozen=True)
class EventStream:
    """Settings of the events stream: ``maxlen`` events kept (approximately, trimmed with
    ``MAXLEN ~``), sent every ``flush_every`` seconds by each worker."""

    maxlen: int = 10_000
    flush_every: float = 0.1

    def __post_init__(self) -> None:
        if not isinstance(self.maxlen, int) or self.maxlen < 1:
            raise ConfigurationError(f"EventStream.maxlen must be an int >= 1, not {self.maxlen!r}")
        if not 0 < self.flush_every <= 60:
            raise ConfigurationError(
                f"EventStream.flush_every must be within (0, 60] seconds, not {self.flush_every!r}"
            )


@dataclass(frozen=True)
class Event:
    """An event as read back from the stream."""

    id: str
    kind: str
    job_id: str
    queue: str
    task: str
    attempt: int
    worker: str
    at_ms: int
    duration_ms: float | None = None
    queue_wait_ms: float | None = None
    reason: str | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


class _Wire(msgspec.Struct, omit_defaults=True):
    """An event as stored: one JSON field, ``event``, per stream entry (one value for the
    worker to pack and Redis to store, not a dozen)."""

    kind: str
    job: str
    queue: str
    task: str
    attempt: int
    worker: str
    at: int
    duration_ms: float | None = None
    wait_ms: float | None = None
    reason: str | None = None
    error: str | None = None


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(_Wire).decode
FIELD: Final = "event"


def encoded(event: JobEvent) -> bytes:
    """The stored form of one event."""
    error = event.error
    if error is not None and len(error) > ERROR_CHARS:
        error = error[: ERROR_CHARS - 3] + "..."
    return _encode(
        _Wire(
            event.kind,
            event.job_id,
            event.queue,
            event.task,
            event.attempt,
            event.worker or "",
            int(event.at * 1000),
            None if event.duration is None else round(event.duration * 1000, 3),
            None if event.queue_wait is None else round(event.queue_wait * 1000, 3),
            event.reason or None,
            error or None,
        )
    )


def parse(entry_id: Any, raw: Any) -> Event:
    """An entry of the stream as an Event (an unreadable one reads as kind ``unknown``)."""
    fields = raw if isinstance(raw, dict) else dict(_pairs(raw))
    value = fields.get(FIELD.encode(), fields.get(FIELD)) or b""
    try:
        w = _decode(value)
    except (msgspec.DecodeError, msgspec.ValidationError, TypeError):
        w = _Wire("unknown", "", "", "", 0, "", 0)
    return Event(
        id=text(entry_id),
        kind=w.kind,
        job_id=w.job,
        queue=w.queue,
        task=w.task,
        attempt=w.attempt,
        worker=w.worker,
        at_ms=w.at,
        duration_ms=w.duration_ms,
        queue_wait_ms=w.wait_ms,
        reason=w.reason,
        error=w.error,
    )


def _pairs(flat: Any) -> Iterator[tuple[Any, Any]]:
    it = iter(flat)
    return zip(it, it, strict=True)


def append_call(key: str, settings: EventStream, events: list[JobEvent]) -> Call[Any]:
    """One script call adds the batch (append_events.lua): one command for the client to
    send and parse per flush, not one per event."""
    args: list[Arg] = [settings.maxlen]
    for e in events:
        args += (FIELD, encoded(e))
    return run_script("append_events", [key], args)


class Host(Protocol):
    """What telling an event needs of the app (the Conveyor app is one)."""

    @property
    def broker(self) -> Broker: ...
    @property
    def hooks(self) -> Hooks: ...
    @property
    def namespace(self) -> str: ...


def tell(app: Host, event: JobEvent) -> None:
    """An event seen outside a worker (a client's cancel ended a queued job): the app's
    hooks are told, and the events stream gets it at once (one call, only when it is on).
    A failure to send is logged, never raised: the job's change already happened."""
    app.hooks.emit(event)
    settings = app.hooks.events
    if settings is not None:
        try:
            app.broker.call(append_call(events_key(app.namespace), settings, [event]))
        except (ConveyorError, OSError) as exc:
            log.warning("dropped a %s event: could not send it: %s", event.kind, exc)


async def tell_async(app: Host, event: JobEvent) -> None:
    app.hooks.emit(event)
    settings = app.hooks.events
    if settings is not None:
        try:
            await app.broker.acall(append_call(events_key(app.namespace), settings, [event]))
        except (ConveyorError, OSError) as exc:
            log.warning("dropped a %s event: could not send it: %s", event.kind, exc)


class EventWriter:
    """A worker's side: events buffered in memory, sent every ``flush_every`` seconds in one
    pipeline. Adding one is a list append; a failed send drops that batch (logged)."""

    def __init__(self, broker: Broker, namespace: str, settings: EventStream) -> None:
        self.broker = broker
        self.key = events_key(namespace)
        self.settings = settings
        self._buffer: list[JobEvent] = []
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0

    def add(self, event: JobEvent) -> None:
        buffer = self._buffer
        buffer.append(event)
        if len(buffer) > BUFFER_CAP:
            del buffer[: len(buffer) - BUFFER_CAP]
            self.dropped += 1

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="conveyor-events")

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.flush_every)
            await self.flush()

    def _call(self, events: list[JobEvent]) -> Call[Any]:
        return append_call(self.key, self.settings, events)

    async def flush(self) -> None:
        while self._buffer:
            batch, self._buffer = self._buffer[:BATCH], self._buffer[BATCH:]
            try:
                await self.broker.acall(self._call(batch))
            except (ConveyorError, OSError) as exc:
                self.dropped += len(batch)
                log.warning("dropped %d event(s): could not send them: %s", len(batch), exc)
                return

    async def close(self) -> None:
        """Stop the loop and send what is left (best effort)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()


def read(
    app: Conveyor, *, after: str = "-", count: int = 100, block_ms: int | None = None
) -> list[Event]:
    """Events of the app's namespace after the entry id ``after`` (``"-"``: from the oldest,
    ``"$"``: only new ones, waiting up to ``block_ms``), oldest first, at most ``count``.

    Pass the last event's ``id`` as ``after`` to read on from there (what ``follow`` does).
    """
    key = events_key(app.namespace)
    if block_ms is None:
        start = "-" if after == "-" else f"({after}"
        if after == "$":
            return []
        entries: Any = app.broker.call(command("XRANGE", key, start, "+", "COUNT", count))
        return [parse(i, f) for i, f in entries or []]
    reply: Any = app.broker.call(
        command("XREAD", "COUNT", count, "BLOCK", block_ms, "STREAMS", key, _xread_id(after))
    )
    return _from_xread(reply)


async def read_async(
    app: Conveyor, *, after: str = "-", count: int = 100, block_ms: int | None = None
) -> list[Event]:
    """``read`` for async code (the dashboard's live view)."""
    key = events_key(app.namespace)
    if block_ms is None:
        if after == "$":
            return []
        start = "-" if after == "-" else f"({after}"
        entries: Any = await app.broker.acall(command("XRANGE", key, start, "+", "COUNT", count))
        return [parse(i, f) for i, f in entries or []]
    reply: Any = await app.broker.acall(
        command("XREAD", "COUNT", count, "BLOCK", block_ms, "STREAMS", key, _xread_id(after))
    )
    return _from_xread(reply)


def latest(app: Conveyor, count: int = 20) -> list[Event]:
    """The last ``count`` events, oldest first."""
    reply: Any = app.broker.call(
        command("XREVRANGE", events_key(app.namespace), "+", "-", "COUNT", count)
    )
    return [parse(i, f) for i, f in reversed(reply or [])]


def follow(app: Conveyor, *, after: str = "$", block_ms: int = 1000) -> Iterator[Event]:
    """Every event from ``after`` on (``"$"``: from now), as they come; runs until closed."""
    last = after
    while True:
        for event in read(app, after=last, count=500, block_ms=block_ms):
            last = event.id
            yield event


def _xread_id(after: str) -> str:
    return "0-0" if after == "-" else after


def _from_xread(reply: Any) -> list[Event]:
    if not reply:
        return []
    streams = reply.items() if isinstance(reply, dict) else reply
    out: list[Event] = []
    for _, entries in streams:
        out += [parse(i, f) for i, f in entries]
    return out
