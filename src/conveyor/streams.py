"""Streamed partial results: what a task yields (or ``emit()``s) while it runs, read live.

Each job has one chunk stream beside its record (``QueueKeys.chunks``). It is not a queue:
MAXLEN bounds it (a reader more than MAX_CHUNKS behind loses the oldest). While the job runs
every write keeps it a day longer than ``result_ttl``; a run's end sets ``result_ttl``, so it
goes away with the job's record.

Every entry names its run (``<attempt>.<delivery>.<token>``: a retry, a crashed worker's
re-run, a replay or a shutdown requeue starts a new run, from its first chunk; the random
token keeps two runs apart when the numbers repeat) and its index in the run. A run writes
one entry at a time, so chunk_append.lua finds a resent entry at the stream's end and drops
it: a write retried after a dropped connection never doubles a chunk. When a run ends, its
worker adds an ``end`` entry and writes nothing more; a run left behind (a sync task's thread
still running after its timeout, or after a shutdown handed its job back) is closed the same
way, so what its thread emits later is dropped instead of mixed into the next run.

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
import os
import threading
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
#: How much longer than ``result_ttl`` a running job's chunks are kept after each write.
RUNNING_MS = 24 * 3600 * 1000
#: How long an abandoned run's end waits for a write its thread has under way (seconds).
END_WAIT = 2.0
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
    #: the name of the run that emitted it: a new name is a new run (a retry, a re-run after
    #: a crash, a replay), whose chunks start again from the first
    run: str = ""

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
    """Add a chunk (``kind`` "c") or a run's end ("end") to the job's stream: one script.
    The stream then expires ``ttl_ms`` after this write."""
    return run_script(
        "chunk_append",
        [keys.chunks(job_id)],
        [MAX_CHUNKS, max(1, ttl_ms), run, index, kind, payload],
        _text,
    )


class Run:
    """What one run has written: its name, its next index, and whether it is still open.

    Made at a run's first write (a plain job never makes one) and kept in its JobContext.
    Indexes are taken under a short lock (threads of one sync job may emit at once), and
    the writes of one run are serialised (a lock for threads, one for the event loop), so
    the stream holds a run's entries in index order and a resent write is always the
    stream's last entry of that run. A closed run writes nothing more: its end is written,
    or it was abandoned (a sync task's thread still runs after its timeout or a shutdown
    requeue, while the job runs again elsewhere).
    """

    __slots__ = ("alock", "lock", "name", "next", "open")

    def __init__(self, name: str) -> None:
        self.name = name
        self.next = 0
        self.open = True
        self.lock = threading.Lock()
        self.alock: asyncio.Lock | None = None

    def take(self, close: bool = False) -> int | None:
        """The next index, or None when the run is closed; ``close``: the last one."""
        with _TAKE:
            if not self.open:
                return None
            n = self.next
            self.next = n + 1
            self.open = not close
            return n


#: Guards taking a run's index and making a job's Run: held for a few instructions, never
#: across I/O, so one lock serves every job.
_TAKE = threading.Lock()
#: The run of a job abandoned before it wrote anything: closed, never written.
_ABANDONED = Run("")
_ABANDONED.open = False


def run_of(job: JobContext) -> Run:
    """The job's current run (made at its first write), named ``<attempt>.<delivery>.
    <token>``: attempt and delivery for readers, and a random token, since neither the two
    numbers nor the entry make a run unique (a replay starts again at attempt 1, delivery
    1; a shutdown requeue keeps the attempt in a fresh entry)."""
    run: Run | int = job._flags[2]
    if isinstance(run, Run):
        return run
    with _TAKE:
        run = job._flags[2]
        if not isinstance(run, Run):
            run = job._flags[2] = Run(f"{job.attempt}.{job.deliveries}.{os.urandom(6).hex()}")
        return run


def abandon_run(job: JobContext) -> tuple[Run, int] | None:
    """Close the job's run without writing its end: its function may still run (a thread),
    and must write no more. Returns the run and the index its end takes when it wrote
    something and was still open (ChunkWriter.abandon then writes that end)."""
    with _TAKE:
        run = job._flags[2]
        if not isinstance(run, Run):
            job._flags[2] = _ABANDONED
            return None
    index = run.take(close=True)
    return None if index is None else (run, index)


def _wait_free(lock: threading.Lock, timeout: float) -> None:
    """Wait until ``lock`` is free (at most ``timeout`` s), on a thread: never left held."""
    if lock.acquire(timeout=timeout):
        lock.release()


class ChunkWriter:
    """Writes the chunks of the jobs a worker runs (one per worker, shared by its jobs).

    ``keys_of`` gives a queue's keys and ``ttl_of`` a task's ``result_ttl`` in ms. While a
    job runs, each write keeps its stream for ``result_ttl`` plus RUNNING_MS (a job may work
    long after its last chunk); the run's end sets ``result_ttl``, as its record gets.
    A job's run (its name, next index, locks) lives in its JobContext, made at its first
    write, so nothing is allocated for a job that emits nothing.
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

    def _call(
        self, job: JobContext, run: Run, index: int, kind: str, payload: bytes | str
    ) -> Call[str]:
        ttl = self.ttl_of(job.task)
        if kind != "end":
            ttl += RUNNING_MS
        return append(self.keys_of(job.queue), job.id, run.name, index, kind, payload, ttl)

    def emit(self, job: JobContext, value: Any) -> bool:
        """Store one chunk (blocking); False when the run is closed and nothing was written."""
        raw = encode_chunk(value, self.max_bytes)
        run = run_of(job)
        if not run.open:
            return False
        with run.lock:
            index = run.take()
            if index is None:
                return False
            self.broker.call(self._call(job, run, index, "c", raw))
        return True

    async def aemit(self, job: JobContext, value: Any) -> bool:
        raw = encode_chunk(value, self.max_bytes)
        run = run_of(job)
        if not run.open:  # (before its lock is made: _ABANDONED is shared by all loops)
            return False
        if run.alock is None:
            run.alock = asyncio.Lock()
        async with run.alock:
            index = run.take()
            if index is None:
                return False
            await self.broker.acall(self._call(job, run, index, "c", raw))
        return True

    def end(self, job: JobContext, ok: bool) -> None:
        """Close the run and mark its end (a hint for readers: a failure to write it only
        delays them). Nothing is written for a run already closed."""
        run = run_of(job)
        if not run.open:
            return
        with run.lock:
            index = run.take(close=True)
            if index is None:
                return
            try:
                self.broker.call(self._end_call(job, run, index, ok))
            except Exception as exc:
                log.warning("job %s: could not mark the end of its chunk stream: %s", job.id, exc)

    async def abandon(self, job: JobContext) -> None:
        """Close the run of a job whose function is left running (a timed-out thread, a
        timed-out or cancelled coroutine) and mark its end, from the event loop: what the
        function writes from now on is dropped, so a retry streams alone."""
        closed = abandon_run(job)
        if closed is None:
            return
        run, index = closed
        if run.lock.locked():  # a thread's write is under way: let it land first, so the
            await asyncio.to_thread(_wait_free, run.lock, END_WAIT)  # end is the run's last
        await self._aend(job, run, False, index)

    async def aend(self, job: JobContext, ok: bool) -> None:
        run = run_of(job)
        await self._aend(job, run, ok, None)

    async def _aend(self, job: JobContext, run: Run, ok: bool, index: int | None) -> None:
        if run.alock is None:
            await self._awrite_end(job, run, ok, index)
        else:  # after the writes still in flight (tasks the job started), not among them
            async with run.alock:
                await self._awrite_end(job, run, ok, index)

    async def _awrite_end(self, job: JobContext, run: Run, ok: bool, index: int | None) -> None:
        """``index``: the one abandon_run took, else the run is closed here."""
        if index is None:
            index = run.take(close=True)
        if index is None:
            return
        try:
            await self.broker.acall(self._end_call(job, run, index, ok))
        except Exception as exc:
            log.warning("job %s: could not mark the end of its chunk stream: %s", job.id, exc)

    def _end_call(self, job: JobContext, run: Run, index: int, ok: bool) -> Call[str]:
        return self._call(job, run, index, "end", END_OK if ok else END_ERROR)


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
            run = _text(f.get(b"run", b"0.0"))
            attempt, delivery = _numbers(run)
            index = int(f.get(b"n", 0))
            if b"c" in f:
                self.run_ended = False
                chunks.append(Chunk(entry_id, attempt, delivery, index, f[b"c"], run))
            elif b"end" in f:
                self.run_ended = True
        return chunks


def _numbers(run: str) -> tuple[int, int]:
    """(attempt, delivery) from a run's name; 0 for a part that is not a number."""
    parts = run.split(".")
    numbers = [int(p) if p.isdigit() else 0 for p in parts[:2]]
    return numbers[0], numbers[1] if len(numbers) > 1 else 0


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
