"""RQ: `rq worker` (a work horse forked per job, RQ's default Worker); two processes are
`rq worker-pool -n 2`. Results are kept (RQ's default result_ttl, 500 s)."""

from __future__ import annotations

import time

from redis import Redis
from rq import Queue

from ._record import begin, record, url

LABEL = "RQ (fork per job)"
RESULTS = "yes (job hash with result, result_ttl 500 s: the default)"
WORKER_ID = "ppid"  # each job runs in a fresh fork: the worker is its parent
IO_PROCESSES = 100


def noop(i: int) -> None:
    record(i, begin())


def sleep(i: int) -> None:
    start = begin()
    time.sleep(0.05)
    record(i, start)


TASKS = {"noop": noop, "sleep": sleep}


def workers(bin_dir: str, processes: int, io: bool) -> tuple[list[list[str]], dict[str, str], str]:
    if io:
        processes = IO_PROCESSES
    common = ["--url", url(), "--logging-level", "WARNING"]
    if processes == 1:
        argv = [f"{bin_dir}/rq", "worker", "--url", url(), "--logging_level", "WARNING"]
        return [argv], {}, "rq worker (1 process, fork per job)"
    argv = [f"{bin_dir}/rq", "worker-pool", "-n", str(processes), *common]
    return [argv], {}, f"rq worker-pool -n {processes} (fork per job)"


class SyncProducer:
    def __init__(self) -> None:
        self.conn = Redis.from_url(url())
        self.queue = Queue(connection=self.conn)

    def enqueue(self, task: str, i: int) -> None:
        self.queue.enqueue(TASKS[task], i)

    def enqueue_many(self, task: str, ids: list[int]) -> None:
        fn = TASKS[task]
        for start in range(0, len(ids), 1000):
            batch = [Queue.prepare_data(fn, (i,)) for i in ids[start : start + 1000]]
            self.queue.enqueue_many(batch)

    def close(self) -> None:
        self.conn.close()


PRODUCERS = {"sync": SyncProducer}
