"""Queue health: ready (lag), running (pending), delayed and dead jobs, and live workers.

Covers the streams document's "monitoring queue health" (a dict built from XINFO STREAM and
XINFO GROUPS). That dict reports the stream's length as "total tasks", which also counts
finished jobs kept as history, and only one stream's pending count. `conveyor.stats`
reads every priority level's group lag and PEL, the delayed set and the dead stream in one
round trip; `conveyor stats` prints the same (add `--watch 2` to refresh, `--json` for
scripts). The group's lag is also what KEDA's redis-streams scaler reads to autoscale.

Run it:  python examples/queue_stats.py
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import subprocess
import sys

from conveyor import Conveyor, JobFailed, WorkerSettings, stats
from conveyor.testing import delete_namespace, worker_task

NAMESPACE = os.environ.get("EXAMPLE_NAMESPACE") or f"example-stats-{secrets.token_hex(3)}"
app = Conveyor(namespace=NAMESPACE, default_queue="documents")


#: Holds the running OCR jobs until the report is printed: however slow this machine is
#: (the CLI below takes a second or more to start), the counts cannot move while it reads.
#: The worker runs in this process, so a plain asyncio.Event reaches its jobs.
release = asyncio.Event()


@app.task
async def ocr(page: int) -> int:
    if page != 1:  # page 1 is the job that ends done
        await asyncio.wait_for(release.wait(), timeout=60)
    return page


@app.task(retries=0)
def broken(page: int) -> None:
    raise RuntimeError("scanner firmware error")


async def fill_queue() -> None:
    """Leave 1 job dead, 1 done, 2 running, 5 ready and 3 delayed."""
    with contextlib.suppress(JobFailed):
        await (await broken.enqueue_async(0)).result_async(timeout=10)
    done = await ocr.enqueue_async(1)
    await done.result_async(timeout=10)
    await ocr.enqueue_many_async([(p,) for p in range(2, 9)])  # 2 run, 5 wait
    for _ in range(3):
        await ocr.enqueue_in_async(60, 99)
    for _ in range(500):  # until the worker has taken 2 of them
        if stats.queue_stats(app, "documents").running == 2:
            break
        await asyncio.sleep(0.02)


async def report() -> bool:
    """Print the seed's XINFO numbers, conveyor.stats and `conveyor stats`; True if right."""
    stream = app.keys("documents").stream("normal")
    raw = app.broker.client.xinfo_stream(stream)
    group = app.broker.client.xinfo_groups(stream)[0]
    print("raw XINFO, as in the seed: total_tasks", raw["length"], "pending", group["pending"])

    s = stats.queue_stats(app, "documents")
    print(f"conveyor.stats: ready {s.ready}, running {s.running}, delayed {s.delayed},")
    print(f"  dead {s.dead}, consumers {s.consumers}, live workers {stats.live_workers(app)}")
    for lv in s.levels:
        print(f"  {lv.level:<6} length {lv.length} ready {lv.ready} running {lv.running}")
    ok = (s.ready, s.running, s.delayed, s.dead) == (5, 2, 3, 1)

    cli = [sys.executable, "-m", "conveyor", "--namespace", NAMESPACE, "stats", "--json"]
    out = await asyncio.to_thread(subprocess.check_output, cli)
    print("$ conveyor --namespace", NAMESPACE, "stats --json\n" + out.decode().strip())
    return ok and json.loads(out)["queues"][0]["ready"] == 5


async def main() -> int:
    print(f"namespace {NAMESPACE}")
    try:
        async with worker_task(app, WorkerSettings(concurrency=2)):
            await fill_queue()
            ok = await report()
            release.set()
    finally:
        delete_namespace(app)
    print("stats match the queue's state" if ok else "UNEXPECTED OUTCOME")
    return 0 if ok else 1


if __name__ == "__main__":
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    sys.exit(asyncio.run(main()))
