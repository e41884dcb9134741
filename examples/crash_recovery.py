"""Crash recovery: a worker process killed mid-job; another worker takes the job over.

Covers the streams document's "handling failed tasks" (a loop of XPENDING + XCLAIM that
you write and run yourself) and the tutorial's worst case, "a worker crashes while
processing a job: the job is lost" (BRPOP has already removed it from the list).

In Conveyor a running job stays in the consumer group's pending list (PEL) under a lease
that its worker renews. A worker killed with SIGKILL stops renewing; after the lease timeout
(`--lease`, here 1 s) any live worker reclaims the job with XAUTOCLAIM and runs it again.
That is at-least-once delivery: the task ran twice, so it writes its output idempotently.
A job that kills every worker that runs it is dead-lettered after `max_deliveries`.

Run it (starts `conveyor worker examples.crash_recovery:app -p 2 --lease 1` itself):

    python examples/crash_recovery.py
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

from conveyor import Conveyor, JobFailed, JobState
from conveyor.testing import delete_namespace

NAMESPACE = os.environ.get("EXAMPLE_NAMESPACE") or f"example-crash-{secrets.token_hex(3)}"
app = Conveyor(namespace=NAMESPACE, default_queue="media")


@app.task
def transcode(video: str) -> int:
    r = app.broker.client
    r.rpush(f"{NAMESPACE}:started", os.getpid())
    if r.incr(f"{NAMESPACE}:tries:{video}") == 1:
        time.sleep(60)  # the first run hangs long enough to be killed
    r.set(f"{NAMESPACE}:output:{video}", f"{video}.mp4")  # idempotent: same key, same value
    return os.getpid()


@app.task(max_deliveries=2)
def poison(blob: str) -> None:
    os.kill(os.getpid(), signal.SIGKILL)  # e.g. a native library that segfaults on this input


def main() -> int:
    print(f"namespace {NAMESPACE}")
    # `conveyor worker examples.crash_recovery:app -p 2 --lease 1`: two worker processes
    cmd = ["worker", "examples.crash_recovery:app", "--processes", "2", "--lease", "1"]
    supervisor = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "--log-level", "WARNING", *cmd],
        cwd=Path(__file__).resolve().parent.parent,  # where `examples.` imports from
        env={**os.environ, "EXAMPLE_NAMESPACE": NAMESPACE},  # the workers use our namespace
    )
    r = app.broker.client
    try:
        job = transcode.enqueue("intro")
        first = r.blpop(f"{NAMESPACE}:started", timeout=30)
        assert first is not None, "the job never started"
        pid = int(first[1])
        info = job.info()
        print(f"{job.id} is {info.state.value} in process {pid} (consumer {info.consumer})")
        os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        print(f"SIGKILL sent to worker process {pid}")
        second = job.result(timeout=30)
        print(
            f"reclaimed and finished by process {second} {time.monotonic() - killed_at:.1f}s later"
        )
        output = r.get(f"{NAMESPACE}:output:intro")
        tries = int(r.get(f"{NAMESPACE}:tries:intro") or 0)
        print(f"transcode ran {tries} times (at least once); its output: {output!r}")
        ok = second != pid and job.status() is JobState.DONE and output == b"intro.mp4"
        ok &= tries == 2

        bad = poison.enqueue("corrupt.bin")
        try:
            bad.result(timeout=30)
            ok = False
        except JobFailed as exc:
            print(f"{bad.id} dead-lettered: {exc.error}")
            record = bad.info().record
            ok &= record is not None and record.reason == "max_deliveries"
    finally:
        supervisor.terminate()  # SIGTERM, passed on to every worker process
        supervisor.wait(30)
        delete_namespace(app)
    print("killed job recovered, poison job bounded" if ok else "UNEXPECTED OUTCOME")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
