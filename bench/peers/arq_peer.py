"""arq: the `arq module.WorkerSettings` CLI, one process per worker (arq has no multi-process
option: two processes are two `arq` commands), max_jobs 10 (its default). Results are kept
(keep_result 3600 s: the default)."""

from __future__ import annotations

import asyncio
from typing import Any

from arq import create_pool
from arq.connections import RedisSettings

from ._record import abegin, record, slots, url

LABEL = "arq"
RESULTS = "yes (keep_result 3600 s: the default)"
MAX_JOBS = 10
IO_SLOTS = 100


async def noop(ctx: dict[str, Any], i: int) -> None:
    record(i, await abegin())


async def sleep(ctx: dict[str, Any], i: int) -> None:
    start = await abegin()
    await asyncio.sleep(0.05)
    record(i, start)


class WorkerSettings:
    functions = [noop, sleep]
    redis_settings = RedisSettings.from_dsn(url())
    max_jobs = slots(MAX_JOBS)


#: arq's own logging at WARNING, through its --custom-log-dict option.
LOG_CONFIG = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"arq.standard": {"level": "WARNING", "class": "logging.StreamHandler"}},
    "loggers": {"arq": {"handlers": ["arq.standard"], "level": "WARNING"}},
}


def workers(bin_dir: str, processes: int, io: bool) -> tuple[list[list[str]], dict[str, str], str]:
    n = IO_SLOTS if io else MAX_JOBS
    argv = [f"{bin_dir}/arq", "bench.peers.arq_peer.WorkerSettings"]
    argv += ["--custom-log-dict", "bench.peers.arq_peer.LOG_CONFIG"]
    return [argv] * processes, {"BENCH_SLOTS": str(n)}, f"{processes} x arq, max_jobs={n}"


class AsyncProducer:
    async def start(self) -> None:
        self.pool = await create_pool(RedisSettings.from_dsn(url()))

    async def enqueue(self, task: str, i: int) -> None:
        await self.pool.enqueue_job(task, i)

    async def close(self) -> None:
        await self.pool.aclose()


PRODUCERS = {"async": AsyncProducer}
