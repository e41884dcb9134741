"""Scaling out: several worker processes share one queue; each job runs exactly once.

Covers the streams document's "scaling with multiple workers" (one consumer group, many
consumers) and the tutorial's pool of worker processes. Conveyor's workers join the queue's
consumer group `conveyor`; Redis hands each entry to one of them. Add processes (`-p`) or
machines running the same command to add capacity; nothing else needs to change.

Run it (starts `conveyor worker examples.scaling_out:app -p 3 -c 2` itself):

    python examples/scaling_out.py
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from conveyor import Conveyor, stats
from conveyor.testing import delete_namespace

NAMESPACE = os.environ.get("EXAMPLE_NAMESPACE") or f"example-scaling-{secrets.token_hex(3)}"
app = Conveyor(namespace=NAMESPACE, default_queue="thumbnails")


@app.task
def thumbnail(n: int) -> int:
    app.broker.client.incr(f"{NAMESPACE}:runs:{n}")  # how often this job ran, in Redis
    time.sleep(0.05)
    return os.getpid()


def main() -> int:
    print(f"namespace {NAMESPACE}")
    cmd = ["worker", "examples.scaling_out:app", "--processes", "3", "--concurrency", "2"]
    print("$ conveyor", " ".join(cmd))
    supervisor = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "--log-level", "WARNING", *cmd],
        cwd=Path(__file__).resolve().parent.parent,  # where `examples.` imports from
        env={**os.environ, "EXAMPLE_NAMESPACE": NAMESPACE},  # the workers use our namespace
    )
    try:
        deadline = time.monotonic() + 30
        while len(stats.live_workers(app)) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        print(f"live workers: {len(stats.live_workers(app))}")
        jobs = thumbnail.enqueue_many([(n,) for n in range(60)])
        pids = Counter(job.result(timeout=30) for job in jobs)
        for pid, n in sorted(pids.items()):
            print(f"  worker process {pid} ran {n} jobs")
        ran = [int(app.broker.client.get(f"{NAMESPACE}:runs:{n}") or 0) for n in range(60)]
        s = stats.queue_stats(app, "thumbnails")
        print(f"60 jobs, {len(pids)} processes, runs per job: {sorted(set(ran))}")
        print(f"consumers in the group: {s.consumers}, ready {s.ready}, running {s.running}")
        ok = len(pids) == 3 and set(ran) == {1} and s.ready == 0 and s.running == 0
    finally:
        supervisor.terminate()  # SIGTERM, passed on to every worker process
        supervisor.wait(30)
        delete_namespace(app)
    print("each job ran once, spread over 3 processes" if ok else "UNEXPECTED OUTCOME")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
