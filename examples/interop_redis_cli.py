"""The wire format: jobs written by redis-cli (or any language) run like any other.

Covers the streams document's "stream task structure" (a job is a plain set of fields added
with XADD) and the tutorial's advice to version the job schema and handle entries that do
not decode. A job is one stream entry with these fields:

    version 1 | task <name> | args <JSON array> | kwargs <JSON object>
    enqueued_at <ms> | attempt 1 | [id <job id>] | [history <JSON>]

added to `<namespace>:{<queue>}:ready:<high|normal|low>`. Its job id is
`<queue>:<h|n|l>:<entry id>`. Entries that cannot be run (bad JSON, unknown version, unknown
task) go to the dead-letter stream with the reason, instead of crashing a worker.

Run it:  python examples/interop_redis_cli.py   (uses redis-cli when it is on PATH,
otherwise sends the same command with redis-py)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shlex
import shutil
import subprocess
import sys
import time

from conveyor import Conveyor, JobFailed, Leases, WorkerSettings, dead_letters
from conveyor.testing import delete_namespace, worker_task

NAMESPACE = os.environ.get("EXAMPLE_NAMESPACE") or f"example-interop-{secrets.token_hex(3)}"
app = Conveyor(namespace=NAMESPACE)


@app.task
def add(a: int, b: int, scale: int = 1) -> int:
    return (a + b) * scale


def xadd(*fields: str) -> str:
    """XADD <stream> * <fields>, as a shell script or another language would send it."""
    stream = app.keys("default").stream("normal")
    words = ["XADD", stream, "*", *fields]
    cli = shutil.which("redis-cli")
    if cli:
        out = subprocess.check_output([cli, "-u", app.url, *words])
        return out.decode().strip()
    return app.broker.client.execute_command(*words).decode()


def show_entry(job_id: str) -> None:
    """A job enqueued by Conveyor, field by field, as XRANGE returns it."""
    stream = app.keys("default").stream("normal")
    _, fields = app.broker.client.xrange(stream, job_id.split(":")[2], "+")[0]
    print(f"a job enqueued by Conveyor, as XRANGE shows it ({job_id}):")
    for name, value in fields.items():
        print(f"  {name.decode():<12} {value.decode()}")


async def main() -> int:
    print(f"namespace {NAMESPACE}")
    now = str(int(time.time() * 1000))
    job = ["version", "1", "task", "add", "args", "[2, 3]", "kwargs", '{"scale": 10}']
    job += ["enqueued_at", now, "attempt", "1"]
    stream = app.keys("default").stream("normal")
    via = "redis-cli" if shutil.which("redis-cli") else "redis-py (no redis-cli on PATH)"
    print(f"$ {shlex.join(['redis-cli', 'XADD', stream, '*', *job])}    # sent with {via}")
    try:
        entry = xadd(*job)
        job_id = f"default:n:{entry}"
        bad = [
            xadd("version", "1", "task", "add", "args", "[2,", "kwargs", "{}"),
            xadd("version", "2", "task", "add", "args", "[2, 3]", "kwargs", "{}"),
            xadd("version", "1", "task", "resize", "args", "[]", "kwargs", "{}"),
            xadd("version", "1", "task", "add", "args", '["two", 3]', "kwargs", "{}"),
        ]
        # A task no live worker registers is handed back for three lease timeouts (another
        # worker of a rolling deploy may know it) before it is dead-lettered: short leases
        # here, so that takes three seconds.
        async with worker_task(app, WorkerSettings(leases=Leases(timeout=1))):
            result = await app.job(job_id).result_async(timeout=10)
            print(f"job {job_id} -> {result}")
            ok = result == 50
            for entry_id in bad:
                with contextlib.suppress(JobFailed):
                    await app.job(f"default:n:{entry_id}").result_async(timeout=10)
            dead = {d.job_id: d for d in dead_letters.list_dead(app, "default")}
            reasons = []
            for entry_id in bad:
                d = dead[f"default:n:{entry_id}"]
                print(f"dead: {d.job_id} reason={d.reason}: {d.error}")
                reasons.append(d.reason)
            ok &= reasons == ["malformed", "malformed", "unknown_task", "bad_arguments"]

            own = await add.enqueue_async(1, 2)
            await own.result_async(timeout=10)
        show_entry(own.id)
    finally:
        delete_namespace(app)
    print("plain XADD job ran; bad entries dead-lettered" if ok else "UNEXPECTED OUTCOME")
    return 0 if ok else 1


if __name__ == "__main__":
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    sys.exit(asyncio.run(main()))
