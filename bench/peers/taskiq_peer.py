"""taskiq with taskiq-redis' stream broker (RedisStreamBroker): `taskiq worker module:broker
--workers P` (max-async-tasks 100: its default). No result backend (none is the default)."""

from __future__ import annotations

import asyncio

from taskiq_redis import RedisStreamBroker

from ._record import abegin, record, url

LABEL = "taskiq + taskiq-redis (stream broker)"
RESULTS = "no (no result backend: the default)"
MAX_ASYNC_TASKS = 100
#: taskiq's worker does not exit after SIGTERM/SIGINT with this broker (it hangs after
#: "Stopping prefetching messages..."; its --hardkill-count does not end it either), so the
#: harness kills its process group after this many seconds instead of the usual 15.
STOP_GRACE_S = 3.0

broker = RedisStreamBroker(url=url())


@broker.task(task_name="noop")
async def noop(i: int) -> None:
    record(i, await abegin())


@broker.task(task_name="sleep")
async def sleep(i: int) -> None:
    start = await abegin()
    await asyncio.sleep(0.05)
    record(i, start)


TASKS = {"noop": noop, "sleep": sleep}


def workers(bin_dir: str, processes: int, io: bool) -> tuple[list[list[str]], dict[str, str], str]:
    argv = [f"{bin_dir}/taskiq", "worker", "bench.peers.taskiq_peer:broker"]
    argv += ["--workers", str(processes), "--log-level", "WARNING"]
    argv += ["--max-async-tasks", str(MAX_ASYNC_TASKS)]
    return [argv], {}, f"taskiq worker --workers {processes} --max-async-tasks {MAX_ASYNC_TASKS}"


class AsyncProducer:
    async def start(self) -> None:
        # As taskiq's docs say for producers; for the stream broker this also creates the
        # consumer group (at "$"), so jobs queued before the workers start are delivered.
        await broker.startup()

    async def enqueue(self, task: str, i: int) -> None:
        await TASKS[task].kiq(i)

    async def close(self) -> None:
        await broker.shutdown()


PRODUCERS = {"async": AsyncProducer}
