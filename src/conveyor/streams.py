"""Streamed partial results: what a task yields (or ``emit()``s) while it runs, read live.

Each job has one chunk stream beside its record (``QueueKeys.chunks``). It is not a queue:
MAXLEN bounds it (a reader more than MAX_CHUNKS behind loses the oldest), and every write
sets it to expire ``result_ttl`` after it, so it goes away with the job's record.

Every entry names its run (``<attempt>.<delivery>``: a retry or a crashed worker's re-run
starts a new run, from its first chunk) and its index in the run; chunk_append.lua drops a
resent entry, so a write retried after a dropped connection never doubles a chunk. When a
run ends, its worker adds an ``end`` entry.

When does a reader stop? The job ends in one of many scripts (the batched ack, retry, dead
letters, cancel, expiry), each writing the job's record atomically with the end; that record
is the truth, and the ``end`` entry is only the hint to look at it now. So the reader reads
entries after the last one it saw (XREAD, blocking), and reads the job's state when a run
ended or when nothing came for ``idle_ms``; once the job has ended it reads what is left
(nothing can be added after the end) and stops. A worker killed before its ``end`` entry
therefore costs at most ``idle_ms`` of delay, never a reader that waits for ever, and a
failed run followed by a retry is read through to the retry's chunks.

The reading loop is written once, sans-IO (``_steps``), and run by a sync and an async shell.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from .broker import Broker, Call, command, run_script
from .errors import ConfigurationError, PayloadError
from .keys import QueueKeys
from .wire import encode_json

if TYPE_CHECKING:
    from .context import JobContext

log = logging.getLogger("conveyor.streams")

#: Chunks a job's stream keeps (approximately: MAXLEN ~): a reader this far behind loses the
#: oldest. Plenty for token streams; a task that emits more wants a result or a file instead.
MAX_CHUNKS = 10_000
#: Entries one read returns: a long backlog (a reader attaching late) comes in a few reads.
READ_COUNT = 500
#: How long a reader waits for a chunk before it reads the job's state anyway (a worker that
#: died before writing its run's end).
IDLE_MS = 1000
#: After a run's ``end`` entry, the job's state is read again after this long, doubling up to
#: IDLE_MS: the end lands with the batched ack, a few ms later.
END_POLL_MS = 5
END_OK = "ok"
END_ERROR = "error"


@dataclass(frozen=True)
class Chunk:
    """One partial result, as read back: ``value`` is its JSON decoded."""

    #: the stream entry id: pass it back as ``after`` (or SSE's Last-Event-ID) to resume
    id: str
    #: the attempt (1, 2, ... after retries) and delivery of the run that emitted it
    attempt: int
    delivery: int
    #: its index in its run (0 for a run's first chunk)
    index: int
    #: the chunk as JSON
    raw: bytes

    @property
    def value(self) -> Any:
        return msgspec.json.decode(self.raw)


# -- writing ------------------------------------------------------------------------------------
def encode_chunk(value: Any, max_bytes: int) -> bytes:
    """The chunk as JSON; PayloadError (naming the limit) when it is not JSON or too large."""
    try:
        raw = encode_json(value)
    except PayloadError as exc:
        raise PayloadError(f"a streamed chunk must be JSON: {exc}") from exc
    if len(raw) > max_bytes:
        raise PayloadError(
            f"a streamed chunk is {len(raw)} bytes, over the app's max_payload_bytes "
            f"({max_bytes}); emit smaller chunks"
        )
    return raw


def append(
    keys: QueueKeys, job_id: str, run: str, index: int, kind: str, payload: bytes | str, ttl_ms: int
) -> Call[str]:
    """Add a chunk (``kind`` "c") or a run's end ("end") to the job's stream: one script."""
    return run_script(
        "chunk_append",
        [keys.chunks(job_id)],
        [MAX_CHUNKS, max(1, ttl_ms), run, index, kind, payload],
        _text,
    )


class ChunkWriter:
    """Writes the chunks of the jobs a worker runs (one per worker, shared by its jobs).

    ``keys_of`` gives a queue's keys and ``ttl_of`` a task's ``result_ttl`` in ms: the stream
    is kept as long as the record. A job's running count of chunks lives in its JobContext,
    so nothing is allocated per job that emits nothing.
    """

    def __init__(
        self,
        broker: Broker,
        keys_of: Callable[[str], QueueKeys],
        ttl_of: Callable[[str], int],
        max_bytes: int,
    ) -> None:
        self.broker = broker
        self.keys_of = keys_of
        self.ttl_of = ttl_of
        self.max_bytes = max_bytes

    def _call(self, job: JobContext, kind: str, payload: bytes | str) -> Call[str]:
        run = f"{job.attempt}.{job.deliveries}"
        index = job._flags[2]
        return append(
            self.keys_of(job.queue), job.id, run, index, kind, payload, self.ttl_of(job.task)
        )

    def emit(self, job: JobContext, value: Any) -> None:
        call = self._call(job, "c", encode_chunk(value, self.max_bytes))
        self.broker.call(call)
        job._flags[2] += 1

    async def aemit(self, job: JobContext, value: Any) -> None:
        call = self._call(job, "c", encode_chunk(value, self.max_bytes))
        await self.broker.acall(call)
        job._flags[2] += 1

    def end(self, job: JobContext, ok: bool) -> None:
        """Mark the run's end (a hint for readers: a failure to write it only delays them)."""
        try:
            self.broker.call(self._call(job, "end", END_OK if ok else END_ERROR))
        except Exception as exc:
            log.warning("job %s: could not mark the end of its chunk stream: %s", job.id, exc)

    async def aend(self, job: JobContext, ok: bool) -> None:
        try:
            await self.broker.acall(self._call(job, "end", END_OK if ok else END_ERROR))
        except Exception as exc:
            log.warning("job %s: could not mark the end of its chunk stream: %s", job.id, exc)


# -- reading ------------------------------------------------------------------------------------
class _CheckEnded:
    """A step of the reading loop that asks its shell whether the job has ended."""


@dataclass(frozen=True)
class _Sleep:
    seconds: float


CHECK_ENDED = _CheckEnded()
Step = Call[Any] | Chunk | _CheckEnded | _Sleep


def _text(reply: Any) -> str:
    return reply.decode() if isinstance(reply, bytes) else str(reply)


def _entries(reply: Any) -> list[tuple[str, dict[bytes, bytes]]]:
    """(id, fields) of the entries in an XRANGE reply, or an XREAD reply for one key
    (redis-py parses either: [[key, entries]] over RESP2, {key: [entries]} over RESP3)."""
    if not reply:
        return []
    if isinstance(reply, dict):
        reply = next(iter(reply.values()))
        if reply and isinstance(reply[0], list) and reply[0] and isinstance(reply[0][0], tuple):
            reply = reply[0]
    elif isinstance(reply[0], list):
        reply = reply[0][1]
    out = []
    for entry_id, fields in reply:
        if not isinstance(fields, dict):
            fields = dict(zip(fields[::2], fields[1::2], strict=True))
        out.append((_text(entry_id), fields))
    return out


Entries = list[tuple[str, dict[bytes, bytes]]]


def _xread(key: str, after: str, block_ms: int | None) -> Call[Entries]:
    if block_ms is None:
        return command("XREAD", "COUNT", READ_COUNT, "STREAMS", key, after, parse=_entries)
    return command(
        "XREAD", "COUNT", READ_COUNT, "BLOCK", block_ms, "STREAMS", key, after, parse=_entries
    )


def _xrange(key: str, after: str) -> Call[Entries]:
    return command("XRANGE", key, f"({after}", "+", "COUNT", READ_COUNT, parse=_entries)


class _Reading:
    """What a reader has seen: the last entry id, and whether the latest run has ended."""

    def __init__(self, after: str) -> None:
        self.last = after
        self.run_ended = False

    def feed(self, entries: Entries) -> list[Chunk]:
        chunks = []
        for entry_id, f in entries:
            self.last = entry_id
            run = _text(f.get(b"run", b"0.0")).split(".")
            attempt, delivery = int(run[0]), int(run[-1])
            index = int(f.get(b"n", 0))
            if b"c" in f:
                self.run_ended = False
                chunks.append(Chunk(entry_id, attempt, delivery, index, f[b"c"]))
            elif b"end" in f:
                self.run_ended = True
        return chunks


def _steps(key: str, after: str, idle_ms: int) -> Generator[Step, Any, None]:
    """The reading loop, sans-IO: yields a Call (send back its reply), CHECK_ENDED (send
    back whether the job ended), a _Sleep, or a Chunk for the reader's caller."""
    seen = _Reading(after)
    wait: int | None = None  # the first read does not block: a reader after the end stops
    poll = END_POLL_MS
    while True:
        entries = yield _xread(key, seen.last, wait)
        for chunk in seen.feed(entries):
            yield chunk
        if entries and not seen.run_ended:
            wait = idle_ms  # more may follow at once; block for it
            continue
        if (yield CHECK_ENDED):
            while True:  # nothing is added after the end: read what is left, and stop
                rest = yield _xrange(key, seen.last)
                if not rest:
                    return
                for chunk in seen.feed(rest):
                    yield chunk
        if seen.run_ended:
            # The run's end is written before its ack lands: look again soon, doubling.
            yield _Sleep(poll / 1000)
            poll = min(poll * 2, idle_ms)
            wait = None
        else:
            poll = END_POLL_MS
            wait = idle_ms


def read(
    broker: Broker,
    keys: QueueKeys,
    job_id: str,
    ended: Callable[[], bool],
    *,
    after: str = "0-0",
    idle_ms: int = IDLE_MS,
) -> Iterator[Chunk]:
    """The job's chunks after entry ``after`` (from the start by default), live, until the
    job has ended (``ended()`` reads its state) and every chunk is read."""
    _check_after(after)
    steps = _steps(keys.chunks(job_id), after, idle_ms)
    reply: Any = None
    while True:
        try:
            step = steps.send(reply)
        except StopIteration:
            return
        reply = None
        if isinstance(step, Chunk):
            yield step
        elif isinstance(step, _CheckEnded):
            reply = ended()
        elif isinstance(step, _Sleep):
            time.sleep(step.seconds)
        else:
            reply = broker.call(step)


async def read_async(
    broker: Broker,
    keys: QueueKeys,
    job_id: str,
    ended: Callable[[], Awaitable[bool]],
    *,
    after: str = "0-0",
    idle_ms: int = IDLE_MS,
) -> AsyncIterator[Chunk]:
    """``read`` for asyncio: the blocking reads wait on the event loop, not a thread."""
    _check_after(after)
    steps = _steps(keys.chunks(job_id), after, idle_ms)
    reply: Any = None
    while True:
        try:
            step = steps.send(reply)
        except StopIteration:
            return
        reply = None
        if isinstance(step, Chunk):
            yield step
        elif isinstance(step, _CheckEnded):
            reply = await ended()
        elif isinstance(step, _Sleep):
            await asyncio.sleep(step.seconds)
        else:
            reply = await broker.acall(step)


def _check_after(after: str) -> None:
    from .keys import is_entry_id

    if not is_entry_id(after):
        raise ConfigurationError(
            f"after must be a chunk's entry id like '1700000000000-0' (Chunk.id, or SSE's "
            f"Last-Event-ID), not {after!r}"
        )
