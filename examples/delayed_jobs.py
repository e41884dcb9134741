"""Delayed jobs: run in N seconds or at a given time, with no scheduler process.

Covers the tutorial's scheduler (a sorted set scored by due time, polled once a second by a
separate scheduler process). In Conveyor every worker promotes due jobs from the delayed set
with one Lua script per batch, timed by Redis' clock (TIME inside the script), so:

- there is no extra process to run, and skewed worker clocks do not matter;
- any number of workers may promote at once and each job still runs exactly once.

The tutorial's scheduler reads due jobs, pushes them, then removes them: three separate
commands. Two schedulers interleaving those steps push the same job twice; this script shows
that on a throwaway key, then runs 30 delayed jobs under 3 promoting workers.

Run it:  python examples/delayed_jobs.py
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import sys
import time
from collections import Counter
from datetime import datetime, timedelta, timezone

from conveyor import Conveyor, JobState
from conveyor.testing import delete_namespace, worker_task

NAMESPACE = os.environ.get("EXAMPLE_NAMESPACE") or f"example-delayed-{secrets.token_hex(3)}"
app = Conveyor(namespace=NAMESPACE)
runs: Counter[str] = Counter()


@app.task
async def remind(user: str) -> float:
    runs[user] += 1
    return time.time()


def redis_now() -> float:
    secs, micros = app.broker.client.time()
    return secs + micros / 1e6


def three_command_scheduler_race() -> int:
    """The tutorial's scheduler, two instances, steps interleaved: returns copies pushed."""
    r = app.broker.client
    zset, pending = f"{NAMESPACE}:naive:scheduled", f"{NAMESPACE}:naive:pending"
    r.zadd(zset, {'{"task": "send_email"}': time.time() - 1})
    due_a = r.zrangebyscore(zset, 0, time.time())  # scheduler A reads
    due_b = r.zrangebyscore(zset, 0, time.time())  # scheduler B reads, before A removes
    for job in due_a + due_b:  # both push, then both remove
        r.lpush(pending, job)
        r.zrem(zset, job)
    return int(r.llen(pending))


async def main() -> int:
    print(f"namespace {NAMESPACE}")
    try:
        copies = three_command_scheduler_race()
        print(f"three-command scheduler, two instances: 1 job pushed {copies} times")
        ok = copies == 2

        in_one = remind.enqueue_in(1.0, "ada")
        in_two = remind.enqueue_in(timedelta(seconds=1.5), "grace")
        at_time = remind.enqueue_at(datetime.now(timezone.utc) + timedelta(seconds=2), "linus")
        now = redis_now()
        for job in (in_one, in_two, at_time):
            info = job.info()
            due = (info.due_ms or 0) / 1000
            print(f"{job.id}: {info.state.value}, due in {due - now:.2f}s (Redis clock)")
        burst = [remind.enqueue_in(0.5, f"user-{i}") for i in range(30)]

        async with contextlib.AsyncExitStack() as workers:
            for _ in range(3):  # three workers, all promoting due jobs, racing
                await workers.enter_async_context(worker_task(app))
            for job, delay in ((in_one, 1.0), (in_two, 1.5), (at_time, 2.0)):
                ran_at = await job.result_async(timeout=15)
                print(f"{job.id} ran {ran_at - now:.2f}s after enqueue (due at +{delay}s)")
                ok &= ran_at >= now + delay - 0.05 and await job.status_async() is JobState.DONE
            for job in burst:
                await job.result_async(timeout=15)
        print(f"30 jobs due at once under 3 workers: run counts {sorted(set(runs.values()))}")
        ok &= len(runs) == 33 and set(runs.values()) == {1}
    finally:
        delete_namespace(app)
    print("every delayed job ran once, on time" if ok else "UNEXPECTED OUTCOME")
    return 0 if ok else 1


if __name__ == "__main__":
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    sys.exit(asyncio.run(main()))
