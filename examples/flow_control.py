"""Flow control: cancel, rate and concurrency limits, expiry, progress, unique until done.

Each is global across every worker process and machine, because its state is in Redis and
each change of it is one Lua script on Redis' clock:

- ``job.cancel()`` stops a job wherever it is: a queued job never runs, a running async job
  is cancelled on its worker within one lease renewal (its ``finally`` blocks run);
- ``rate="10/s"`` and ``concurrency=2`` hold back jobs over the limit in the delayed set
  (no worker slot waits, no attempt is counted);
- ``expires=`` drops a job that waited too long to start (ended ``expired``, not a failure);
- ``current_job().progress(...)`` is what ``job.progress()`` and ``conveyor status`` show;
- ``unique_for=None`` keeps a unique key until the job ends, so one runs per key at a time.

Run it:  python examples/flow_control.py
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import sys
import time

from conveyor import (
    CancelOutcome,
    Conveyor,
    JobCancelled,
    JobExpired,
    JobState,
    current_job,
)
from conveyor.testing import delete_namespace, worker_task

NAMESPACE = os.environ.get("EXAMPLE_NAMESPACE") or f"example-flow-{secrets.token_hex(3)}"
app = Conveyor(namespace=NAMESPACE)
ran: list[str] = []
cleaned_up: list[str] = []
starts: dict[str, list[float]] = {"rated": [], "limited": []}
running = {"limited": 0, "peak": 0}


@app.task
async def send(to: str) -> str:
    ran.append(to)
    return to


@app.task(retries=0)
async def long_export(name: str) -> None:
    try:
        await current_job().progress_async(0.5, "halfway")
        await asyncio.sleep(60)
    finally:
        cleaned_up.append(name)  # runs when the job is cancelled


@app.task(rate="10/s")
async def call_partner_api(n: int) -> None:
    starts["rated"].append(time.monotonic())


@app.task(concurrency=2)
async def heavy_query(n: int) -> None:
    running["limited"] += 1
    running["peak"] = max(running["peak"], running["limited"])
    await asyncio.sleep(0.2)
    running["limited"] -= 1


async def main() -> int:
    print(f"namespace {NAMESPACE}")
    ok = True
    try:
        # Before any worker runs: a queued job cancelled, and a job that will wait too long.
        queued = await send.enqueue_async("cancelled-while-queued")
        outcome = (await queued.cancel_async()).outcome
        print(f"cancel a queued job: {outcome.value}")
        ok &= outcome is CancelOutcome.WILL_SKIP
        stale = await send.using(expires=0.2).enqueue_async("too-late")
        first = await send.using(unique_key="report-7", unique_for=None).enqueue_async("r7")
        dup = await send.using(unique_key="report-7", unique_for=None).enqueue_async("r7")
        print(f"unique until done: second enqueue created={dup.created}, same job={dup == first}")
        ok &= not dup.created and dup == first
        await asyncio.sleep(0.5)

        async with worker_task(app):
            try:
                await stale.result_async(timeout=10)
                ok = False
            except JobExpired as exc:
                print(f"expired job: {exc}")
            await first.result_async(timeout=10)
            again = await send.using(unique_key="report-7", unique_for=None).enqueue_async("r7")
            print(f"after the first ended, the key is free: created={again.created}")
            ok &= again.created
            await again.result_async(timeout=10)

            export = await long_export.enqueue_async("q3")
            progress = None
            for _ in range(200):  # the export reports once it has started
                progress = await export.progress_async()
                if progress is not None:
                    break
                await asyncio.sleep(0.05)
            assert progress is not None
            print(f"progress of the running export: {progress.fraction:.0%} {progress.message}")
            result = await export.cancel_async("user clicked stop")
            print(f"cancel a running job: {result.outcome.value} (worker {result.detail})")
            try:
                await export.result_async(timeout=15)
                ok = False
            except JobCancelled as exc:
                print(f"running job: {exc}; finally ran: {cleaned_up == ['q3']}")
            ok &= cleaned_up == ["q3"] and await export.status_async() is JobState.CANCELLED

            rated = [await call_partner_api.enqueue_async(n) for n in range(20)]
            limited = [await heavy_query.enqueue_async(n) for n in range(8)]
            for job in rated + limited:
                await job.result_async(timeout=30)
        span = starts["rated"][-1] - starts["rated"][0]
        print(f"20 jobs at rate 10/s started over {span:.1f}s")
        print(f"concurrency=2: at most {running['peak']} ran at once")
        ok &= span >= 1.5 and running["peak"] == 2
        ok &= "cancelled-while-queued" not in ran and "too-late" not in ran
    finally:
        delete_namespace(app)
    print("cancelled, limited, expired, reported and de-duplicated" if ok else "UNEXPECTED OUTCOME")
    return 0 if ok else 1


if __name__ == "__main__":
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    sys.exit(asyncio.run(main()))
