"""Conveyor, the subject: `conveyor worker` processes, async tasks, results stored (its default)."""

from __future__ import annotations

import asyncio
import time

from conveyor import Conveyor

from ._record import PAYLOAD, abegin, record, url

LABEL = "Conveyor"
RESULTS = "yes (job record with result, kept 24 h: the default)"
#: Slots per worker process for the no-op drains (the CLI's default) and the I/O workload.
CONCURRENCY = 10
IO_SLOTS = 100

app = Conveyor(url(), namespace="bench")
#: Drains are timed to the last ack: the moment this group has no lag and nothing pending.
ACK_GROUP = "conveyor"
ACK_STREAMS = list(app.keys(app.default_queue).streams)
#: Each worker process appends its ack lag histogram to the file this variable names when it
#: stops (conveyor.worker.acklag.write); the driver sets it and reads ack_lag_summary().
ACK_LAG_ENV = "CONVEYOR_ACK_LAG_FILE"
#: Slots per process of the concurrency sweep (issue 9, item 4), one process each.
SLOTS_SWEEP = (10, 100, 500)


def ack_lag_summary(path: str) -> dict[str, float]:
    """Every worker process's ack lag of one drain, merged: count, p50/p90/p99/max in ms."""
    from conveyor.worker.acklag import AckLag

    with open(path, encoding="utf-8") as fh:
        return AckLag.merged(fh).summary()


@app.task
async def noop(i: int) -> None:
    record(i, await abegin())


@app.task
async def sleep(i: int) -> None:
    start = await abegin()
    await asyncio.sleep(0.05)
    record(i, start)


@app.task
async def payload(i: int, prompt: str) -> None:
    record(i, await abegin())


TASKS = {"noop": noop, "sleep": sleep, "payload": payload}


def _kwargs(task: str) -> dict[str, str]:
    return PAYLOAD if task == "payload" else {}


def workers(
    bin_dir: str, processes: int, io: bool, slots: int | None = None
) -> tuple[list[list[str]], dict[str, str], str]:
    slots = slots or (IO_SLOTS if io else CONCURRENCY)
    argv = [f"{bin_dir}/conveyor", "--url", url(), "--log-level", "WARNING", "worker"]
    argv += ["bench.peers.conveyor_peer:app", "--concurrency", str(slots)]
    argv += ["--processes", str(processes)]
    return [argv], {}, f"conveyor worker --processes {processes} --concurrency {slots}"


class SyncProducer:
    def enqueue(self, task: str, i: int) -> None:
        TASKS[task].enqueue(i, **_kwargs(task))

    def enqueue_many(self, task: str, ids: list[int]) -> None:
        t, kwargs = TASKS[task], _kwargs(task)
        t.enqueue_many([t.s(i, **kwargs) for i in ids])

    def roundtrip(self, task: str, i: int) -> float:
        """Seconds from the enqueue call to ``job.result()`` returning (issue 9's latency)."""
        t0 = time.perf_counter()
        TASKS[task].enqueue(i, **_kwargs(task)).result(timeout=30)
        return time.perf_counter() - t0

    def close(self) -> None:
        app.close()


class AsyncProducer:
    async def start(self) -> None:
        pass

    async def enqueue(self, task: str, i: int) -> None:
        await TASKS[task].enqueue_async(i, **_kwargs(task))

    async def close(self) -> None:
        aclose = getattr(app, "aclose", None)
        if aclose is not None:
            await aclose()


PRODUCERS = {"sync": SyncProducer, "async": AsyncProducer}
