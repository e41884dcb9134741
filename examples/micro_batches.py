"""Micro-batches: many small jobs, one call per batch (GPU inference, bulk APIs).

``@app.task(batch_size=32, batch_wait=0.05)`` makes the function take a list of items (each
job's one argument) and return one result per item, in order. A batch is called when it has
32 items or 50 ms after its first, whichever comes first. Each job still ends by its own
outcome: an item whose result is an exception fails (and is retried or dead-lettered) alone,
and a crash re-runs only the jobs whose acks were not stored. Run the worker with
``concurrency`` at least ``batch_size``: each waiting job holds a slot.

Run it:  python examples/micro_batches.py
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import sys

from conveyor import Conveyor, JobFailed, WorkerSettings
from conveyor.testing import delete_namespace, worker_task

NAMESPACE = os.environ.get("EXAMPLE_NAMESPACE") or f"example-batches-{secrets.token_hex(3)}"
app = Conveyor(namespace=NAMESPACE)
batch_sizes: list[int] = []


@app.task(batch_size=32, batch_wait=0.05, retries=0)
async def embed(texts: list[str]) -> list[list[float] | Exception]:
    """Stands in for one GPU forward pass over the whole batch."""
    batch_sizes.append(len(texts))
    await asyncio.sleep(0.005)
    return [
        ValueError("empty text") if not t else [float(len(t)), float(t.count(" "))] for t in texts
    ]


async def main() -> int:
    print(f"namespace {NAMESPACE}")
    texts = [f"document number {i}" for i in range(640)] + [""]
    ok = True
    try:
        jobs = await embed.enqueue_many_async([(t,) for t in texts])
        async with worker_task(app, WorkerSettings(concurrency=64)):
            vectors = [await job.result_async(timeout=30) for job in jobs[:-1]]
            try:
                await jobs[-1].result_async(timeout=30)
                ok = False
            except JobFailed as exc:
                print(f"the poisoned item failed alone: {exc}")
        mean = sum(batch_sizes) / len(batch_sizes)
        print(f"{len(texts)} jobs ran in {len(batch_sizes)} calls (mean batch {mean:.1f})")
        ok &= vectors[7] == [float(len(texts[7])), 2.0] and mean > 8
    finally:
        delete_namespace(app)
    print("batched, one result per job, poison isolated" if ok else "UNEXPECTED OUTCOME")
    return 0 if ok else 1


if __name__ == "__main__":
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    sys.exit(asyncio.run(main()))
