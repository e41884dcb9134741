"""Trimming: keep a bounded history without ever deleting a job that has not finished.

Covers the streams document's memory advice, `XADD ... MAXLEN 10000` or a periodic `XTRIM`.
Those cut the oldest entries whatever their state: a job that no worker has read yet, or
one a worker is running, is deleted with them. Part 1 shows that on a throwaway stream with
plain redis-py: 3 of 6 jobs vanish, and XAUTOCLAIM then reports the running ones as deleted.

Part 2 runs Conveyor's trimming, `Retention(keep_count=3)`: workers trim only below the safe
point (the oldest entry the group has not delivered or not acknowledged), then keep the 3
newest finished entries as history. `keep_seconds` keeps entries by age instead (an entry is
kept while either rule keeps it). While a long job blocks the queue nothing is trimmed; once
all jobs finish, the stream shrinks to its history.

Run it:  python examples/safe_trimming.py
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import sys

from conveyor import Conveyor, Retention, WorkerSettings
from conveyor.testing import delete_namespace, worker_task

NAMESPACE = os.environ.get("EXAMPLE_NAMESPACE") or f"example-trim-{secrets.token_hex(3)}"
app = Conveyor(namespace=NAMESPACE)


@app.task
async def work(n: int) -> int:
    await asyncio.sleep(1.0 if n == 0 else 0.01)  # job 0 is slow: everything queues behind it
    return n


def plain_maxlen() -> int:
    """The seed's advice on a throwaway stream: returns how many of 6 jobs were lost."""
    r = app.broker.client
    key = f"{NAMESPACE}:naive:queue"
    r.xgroup_create(key, "workers", id="0", mkstream=True)
    for n in range(1, 6):
        r.xadd(key, {"job": n})
    r.xreadgroup("workers", "worker-1", {key: ">"}, count=2)  # jobs 1 and 2 are running
    r.xadd(key, {"job": 6}, maxlen=3, approximate=False)  # job 6 arrives, with MAXLEN 3
    left = [int(f[b"job"]) for _, f in r.xrange(key)]
    reply = r.execute_command("XAUTOCLAIM", key, "workers", "worker-2", 0, "0-0")
    deleted = [x.decode() for x in reply[2]] if len(reply) > 2 else ["(Redis < 7 does not say)"]
    print(f"plain MAXLEN 3: jobs left {left}; 1 and 2 were running, 3 never ran")
    print(f"  XAUTOCLAIM after a crash: claimed {len(reply[1])}, deleted {deleted}")
    return 6 - len(left)


async def main() -> int:
    print(f"namespace {NAMESPACE}")
    try:
        lost = plain_maxlen()
        ok = lost == 3

        retention = Retention(keep_count=3, keep_seconds=0, trim_every=0.1)
        stream = app.keys("default").stream("normal")
        jobs = await work.enqueue_many_async([(n,) for n in range(11)])
        async with worker_task(app, WorkerSettings(concurrency=1, retention=retention)):
            await asyncio.sleep(0.6)  # several trim passes run while job 0 blocks the queue
            during = app.broker.client.xlen(stream)
            print(f"Conveyor, keep_count=3, while job 0 runs: stream length {during} (nothing cut)")
            results = [await job.result_async(timeout=15) for job in jobs]
            await asyncio.sleep(0.4)  # let a trim pass run after the last ack
            after = app.broker.client.xlen(stream)
        print(f"after all 11 finished: results {results}, stream length {after} (history)")
        ok &= during == 11 and results == list(range(11)) and after == 3
    finally:
        delete_namespace(app)
    print("no unfinished job trimmed; history bounded" if ok else "UNEXPECTED OUTCOME")
    return 0 if ok else 1


if __name__ == "__main__":
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    sys.exit(asyncio.run(main()))
