"""Huey with RedisHuey (blocking BRPOP reads: the default): `huey_consumer module.huey -k process
-w P` for the no-op drains, `-k thread -w 100` for the I/O workload; `-q` logs at WARNING.
Results are stored only for tasks that return a value, so these no-op tasks store none."""

from __future__ import annotations

import time

from huey import RedisHuey

from ._record import begin, record, url

LABEL = "Huey"
RESULTS = "no (results are stored only for non-None return values)"
IO_SLOTS = 100

huey = RedisHuey("bench", url=url())


@huey.task(name="noop")
def noop(i: int) -> None:
    record(i, begin())


@huey.task(name="sleep")
def sleep(i: int) -> None:
    start = begin()
    time.sleep(0.05)
    record(i, start)


TASKS = {"noop": noop, "sleep": sleep}
STOP_SIGNAL = "SIGINT"  # huey_consumer's graceful signal (SIGTERM stops at once)


def workers(bin_dir: str, processes: int, io: bool) -> tuple[list[list[str]], dict[str, str], str]:
    kind, n = ("thread", IO_SLOTS) if io else ("process", processes)
    argv = [f"{bin_dir}/huey_consumer", "bench.peers.huey_peer.huey", "-k", kind, "-w", str(n)]
    argv.append("-q")
    return [argv], {}, f"huey_consumer -k {kind} -w {n}"


class SyncProducer:
    def enqueue(self, task: str, i: int) -> None:
        TASKS[task](i)

    def enqueue_many(self, task: str, ids: list[int]) -> None:
        TASKS[task].map(ids)  # Huey's bulk call (a loop of single enqueues inside)

    def close(self) -> None:
        pass


PRODUCERS = {"sync": SyncProducer}
