"""The reference floor, not a peer: plain redis-py (hiredis) doing a queue's work, no library.

Enqueue is one XADD per job (sync or asyncio client), or pipelined XADDs in batches of 1,000 for
"bulk". A worker process is one consumer of one group: XREADGROUP COUNT 500, run each job, then
one pipeline with a result SET per job (SET ... EX, like a queue's result record) and one XACK
for the whole batch. ``floor-noresults`` is the same without the SETs. For the 50 ms I/O
workload the consumer is an asyncio loop with 100 slots (XREADGROUP COUNT = free slots).

    python -m bench.peers.floor_peer worker [--slots N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket

import redis
import redis.asyncio

from ._record import PAYLOAD, abegin, begin, record, url

NOTES_RESULTS = os.environ.get("BENCH_PEER", "floor") != "floor-noresults"
LABEL = "floor (redis-py + hiredis)" if NOTES_RESULTS else "floor without results"
RESULTS = "yes (SET per job, EX 86400)" if NOTES_RESULTS else "no"
STREAM = b"floor:stream"
GROUP = b"floor"
FETCH = 500
#: Drains are timed to the last ack (bench/driver.py wait_acked), as Conveyor's are.
ACK_GROUP = GROUP.decode()
ACK_STREAMS = [STREAM]
BULK_BATCH = 1000
IO_SLOTS = 100


def workers(bin_dir: str, processes: int, io: bool) -> tuple[list[list[str]], dict[str, str], str]:
    argv = [f"{bin_dir}/python", "-m", "bench.peers.floor_peer", "worker"]
    if io:
        argv += ["--slots", str(IO_SLOTS)]
        what = f"{processes} asyncio consumer process(es), {IO_SLOTS} slots"
    else:
        what = f"{processes} consumer process(es), XREADGROUP COUNT {FETCH}"
    return [argv] * processes, {}, what


_PAYLOAD_JSON = json.dumps(PAYLOAD).encode()


def _fields(task: str, i: int) -> dict[bytes, bytes]:
    """The job's fields; the "payload" task carries 2 KiB of JSON kwargs (read as bytes)."""
    if task == "payload":
        return {b"t": b"payload", b"i": str(i).encode(), b"k": _PAYLOAD_JSON}
    return {b"t": task.encode(), b"i": str(i).encode()}


class SyncProducer:
    def __init__(self) -> None:
        self.r = redis.Redis.from_url(url())

    def enqueue(self, task: str, i: int) -> None:
        self.r.xadd(STREAM, _fields(task, i))

    def enqueue_many(self, task: str, ids: list[int]) -> None:
        for start in range(0, len(ids), BULK_BATCH):
            pipe = self.r.pipeline(transaction=False)
            for i in ids[start : start + BULK_BATCH]:
                pipe.xadd(STREAM, _fields(task, i))
            pipe.execute()

    def close(self) -> None:
        self.r.close()


class AsyncProducer:
    async def start(self) -> None:
        self.r = redis.asyncio.Redis.from_url(url())

    async def enqueue(self, task: str, i: int) -> None:
        await self.r.xadd(STREAM, _fields(task, i))

    async def close(self) -> None:
        await self.r.aclose()


PRODUCERS = {"sync": SyncProducer, "async": AsyncProducer}

# ------------------------------------------------------------------------------- the consumer

_stopping = False


def _on_signal(signum: int, frame: object) -> None:
    global _stopping
    _stopping = True


def _create_group(r: redis.Redis) -> None:
    try:
        r.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def consume(consumer: str) -> None:
    """XREADGROUP COUNT 500, run, then one pipeline: SET per job (unless no results) + XACK."""
    r = redis.Redis.from_url(url())
    _create_group(r)
    results = NOTES_RESULTS
    while not _stopping:
        reply = r.xreadgroup(GROUP, consumer, {STREAM: ">"}, count=FETCH, block=500)
        if not reply:
            continue
        entries = reply[0][1]
        pipe = r.pipeline(transaction=False)
        ids = []
        for entry_id, fields in entries:
            record(int(fields[b"i"]), begin())  # the no-op task
            if results:
                pipe.set(b"floor:result:" + entry_id, b"null", ex=86400)
            ids.append(entry_id)
        pipe.xack(STREAM, GROUP, *ids)
        pipe.execute()
    r.close()


async def consume_async(consumer: str, slots: int) -> None:
    """The same with an asyncio client and ``slots`` jobs in flight (for the 50 ms I/O task)."""
    r = redis.asyncio.Redis.from_url(url())
    try:
        await r.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise
    free = slots
    finished: list[bytes] = []
    slot_freed = asyncio.Event()
    running: set[asyncio.Task[None]] = set()

    async def run(entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        nonlocal free
        start = await abegin()
        if fields[b"t"] == b"sleep":
            await asyncio.sleep(0.05)
        record(int(fields[b"i"]), start)
        finished.append(entry_id)
        free += 1
        slot_freed.set()

    while not _stopping:
        if finished:
            done = finished[:]
            finished.clear()
            pipe = r.pipeline(transaction=False)
            if NOTES_RESULTS:
                for entry_id in done:
                    pipe.set(b"floor:result:" + entry_id, b"null", ex=86400)
            pipe.xack(STREAM, GROUP, *done)
            await pipe.execute()
        if free == 0:
            slot_freed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(slot_freed.wait(), 0.5)
            continue
        reply = await r.xreadgroup(GROUP, consumer, {STREAM: ">"}, count=free, block=50)
        for entry_id, fields in reply[0][1] if reply else ():
            free -= 1
            task = asyncio.ensure_future(run(entry_id, fields))
            running.add(task)
            task.add_done_callback(running.discard)
    if running:
        await asyncio.wait(running, timeout=5)
    await r.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.peers.floor_peer")
    parser.add_argument("command", choices=["worker"])
    parser.add_argument("--slots", type=int, default=0, help="asyncio consumer with N slots")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    consumer = f"{socket.gethostname()}-{os.getpid()}"
    if args.slots:
        asyncio.run(consume_async(consumer, args.slots))
    else:
        consume(consumer)


if __name__ == "__main__":
    main()
