"""Dramatiq with its Redis broker: `dramatiq module --processes P --threads T` (8 threads per
process, its default). No results (Dramatiq stores results only with the Results middleware)."""

from __future__ import annotations

import logging
import time

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from ._record import begin, record, url

LABEL = "Dramatiq"
RESULTS = "no (needs the Results middleware: not on by default)"
THREADS = 8
IO_SLOTS = 100

logging.basicConfig(level=logging.WARNING)
broker = RedisBroker(url=url())
dramatiq.set_broker(broker)


@dramatiq.actor(actor_name="noop")
def noop(i: int) -> None:
    record(i, begin())


@dramatiq.actor(actor_name="sleep")
def sleep(i: int) -> None:
    start = begin()
    time.sleep(0.05)
    record(i, start)


TASKS = {"noop": noop, "sleep": sleep}


def workers(bin_dir: str, processes: int, io: bool) -> tuple[list[list[str]], dict[str, str], str]:
    threads = IO_SLOTS if io else THREADS
    argv = [f"{bin_dir}/dramatiq", "bench.peers.dramatiq_peer", "--processes", str(processes)]
    argv += ["--threads", str(threads), "--skip-logging"]  # logging: WARNING, set above
    return [argv], {}, f"dramatiq --processes {processes} --threads {threads}"


class SyncProducer:
    def enqueue(self, task: str, i: int) -> None:
        TASKS[task].send(i)

    def close(self) -> None:
        broker.close()


PRODUCERS = {"sync": SyncProducer}
