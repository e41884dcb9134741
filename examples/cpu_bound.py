"""CPU-bound tasks: ``executor="process"`` runs a sync task in a pool of subprocesses.

A thread cannot be stopped from outside, so a thread task's ``timeout`` can only stop
waiting for it; a subprocess can be killed. Here a task that never returns is killed at its
timeout and its subprocess replaced (the job fails like any timeout: retried, then dead),
while CPU work in other subprocesses goes on and does not hold the worker's event loop.

Run it:  python examples/cpu_bound.py
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import sys

from conveyor import Conveyor, JobFailed, WorkerSettings
from conveyor.testing import delete_namespace, worker_task

NAMESPACE = os.environ.get("EXAMPLE_NAMESPACE") or f"example-cpu-{secrets.token_hex(3)}"
app = Conveyor(namespace=NAMESPACE)


@app.task(executor="process")
def count_primes(limit: int) -> int:
    sieve = bytearray([1]) * (limit + 1)
    sieve[0:2] = b"\0\0"
    for i in range(2, int(limit**0.5) + 1):
        if sieve[i]:
            sieve[i * i :: i] = bytearray(len(sieve[i * i :: i]))
    return sum(sieve)


@app.task(executor="process", timeout=1.0, retries=0)
def spin_forever() -> None:
    while True:  # no await, no check: only killing the process stops it
        pass


async def main() -> int:
    print(f"namespace {NAMESPACE}")
    ok = True
    try:
        async with worker_task(app, WorkerSettings(pool_size=2)):
            stuck = await spin_forever.enqueue_async()
            jobs = [await count_primes.enqueue_async(n) for n in (10_000, 100_000, 1_000_000)]
            counts = [await job.result_async(timeout=60) for job in jobs]
            print(f"primes below 10^4, 10^5, 10^6: {counts}")
            ok &= counts == [1229, 9592, 78498]
            try:
                await stuck.result_async(timeout=30)
                ok = False
            except JobFailed as exc:
                print(f"spin_forever: {exc}")
                ok &= "timeout" in str(exc).lower() or "timed out" in str(exc).lower()
            after = await count_primes.enqueue_async(100)
            ok &= await after.result_async(timeout=30) == 25
    finally:
        delete_namespace(app)
    print("CPU work ran in subprocesses; the stuck one was killed" if ok else "UNEXPECTED OUTCOME")
    return 0 if ok else 1


if __name__ == "__main__":
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    sys.exit(asyncio.run(main()))
