"""Celery with its Redis broker, as its docs set it up: `celery -A app worker`, prefork pool.

No result backend (Celery's default). Concurrency is the prefork pool size: one pool process for
"one worker process", two for two. The I/O workload uses the threads pool with 100 threads.
"""

from __future__ import annotations

import time

from celery import Celery

from ._record import begin, record, url

LABEL = "Celery"
RESULTS = "no (no result backend: Celery's default)"
IO_SLOTS = 100

app = Celery("bench", broker=url())


@app.task(name="noop")
def noop(i: int) -> None:
    record(i, begin())


@app.task(name="sleep")
def sleep(i: int) -> None:
    start = begin()
    time.sleep(0.05)
    record(i, start)


TASKS = {"noop": noop, "sleep": sleep}


def workers(bin_dir: str, processes: int, io: bool) -> tuple[list[list[str]], dict[str, str], str]:
    argv = [f"{bin_dir}/celery", "-A", "bench.peers.celery_peer", "worker", "--loglevel=WARNING"]
    if io:
        argv += ["--pool=threads", f"--concurrency={IO_SLOTS}"]
        what = f"1 worker, --pool=threads --concurrency={IO_SLOTS}"
    else:
        argv += ["--pool=prefork", f"--concurrency={processes}"]
        what = f"1 worker, --pool=prefork --concurrency={processes} (pool processes)"
    return [argv], {}, what


class SyncProducer:
    def enqueue(self, task: str, i: int) -> None:
        TASKS[task].delay(i)

    def close(self) -> None:
        app.close()


PRODUCERS = {"sync": SyncProducer}
