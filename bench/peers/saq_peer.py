"""SAQ: `saq module.settings --workers P` (its CLI logs at WARNING unless -v), concurrency 10 per
process (its default). Results are kept (SAQ keeps finished jobs: ttl 600 s by default)."""

from __future__ import annotations

import asyncio
from typing import Any

from saq import Queue

from ._record import abegin, record, slots, url

LABEL = "SAQ"
RESULTS = "yes (finished job kept, ttl 600 s: the default)"
CONCURRENCY = 10
IO_SLOTS = 100
#: `saq --workers N` starts N-1 extra processes that the main one waits for on exit but does not
#: signal: stop them all the way Ctrl-C in a terminal does, by signalling the group.
STOP_GROUP = True

queue = Queue.from_url(url())


async def noop(ctx: dict[str, Any], *, i: int) -> None:
    record(i, await abegin())


async def sleep(ctx: dict[str, Any], *, i: int) -> None:
    start = await abegin()
    await asyncio.sleep(0.05)
    record(i, start)


settings = {"queue": queue, "functions": [noop, sleep], "concurrency": slots(CONCURRENCY)}


def workers(bin_dir: str, processes: int, io: bool) -> tuple[list[list[str]], dict[str, str], str]:
    n = IO_SLOTS if io else CONCURRENCY
    argv = [f"{bin_dir}/saq", "bench.peers.saq_peer.settings", "--workers", str(processes)]
    return [argv], {"BENCH_SLOTS": str(n)}, f"saq --workers {processes}, concurrency={n}"


class AsyncProducer:
    async def start(self) -> None:
        await queue.connect()

    async def enqueue(self, task: str, i: int) -> None:
        await queue.enqueue(task, i=i)

    async def close(self) -> None:
        await queue.disconnect()


PRODUCERS = {"async": AsyncProducer}
