"""Priorities: high, normal and low jobs of one queue; a worker always drains high first.

Covers the tutorial's challenge 4 (separate lists per priority, checked high first). Each
level is its own ready stream (`<ns>:{queue}:ready:high|normal|low`); the fetch script reads
them in that order, so a high job enqueued behind a backlog of low ones still runs next.

Run it:  python examples/priorities.py
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import sys

from conveyor import Conveyor, WorkerSettings
from conveyor.testing import delete_namespace, worker_task

NAMESPACE = os.environ.get("EXAMPLE_NAMESPACE") or f"example-priorities-{secrets.token_hex(3)}"
app = Conveyor(namespace=NAMESPACE)
order: list[str] = []
started = asyncio.Event()


@app.task(priority="low")  # the task's default level; .using(priority=...) overrides it
async def render(name: str) -> None:
    order.append(name)
    started.set()
    await asyncio.sleep(0.05)


async def main() -> int:
    print(f"namespace {NAMESPACE}")
    high, normal = render.using(priority="high"), render.using(priority="normal")
    try:
        # Enqueued low first, high last: the order a FIFO list would run them in.
        jobs = await render.enqueue_many_async([(f"low-{i}",) for i in range(3)])
        jobs += await normal.enqueue_many_async([(f"normal-{i}",) for i in range(3)])
        jobs += await high.enqueue_many_async([(f"high-{i}",) for i in range(3)])
        print("enqueued:", ", ".join(j.id.split(":")[1] for j in jobs))

        # One job at a time, so the order they run in is visible.
        async with worker_task(app, WorkerSettings(concurrency=1)):
            for job in jobs[:3]:  # wait for the low jobs: they come last
                await job.result_async(timeout=15)
            print("ran in order:", ", ".join(order))
            ok = order == [f"{lv}-{i}" for lv in ("high", "normal", "low") for i in range(3)]

            # A high job that arrives while a backlog of low jobs waits jumps the line.
            order.clear()
            started.clear()
            backlog = await render.enqueue_many_async([(f"backlog-{i}",) for i in range(5)])
            await started.wait()  # backlog-0 is running, 4 low jobs wait
            urgent = await high.enqueue_async("urgent")
            await urgent.result_async(timeout=15)
            for job in backlog:
                await job.result_async(timeout=15)
            print("with a late high job:", ", ".join(order))
            ok &= order.index("urgent") <= 2
    finally:
        delete_namespace(app)
    print("high drained first" if ok else "UNEXPECTED OUTCOME")
    return 0 if ok else 1


if __name__ == "__main__":
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    sys.exit(asyncio.run(main()))
