"""Slot loops: at most ``concurrency`` jobs at once, most urgent first, a clean stop."""

from __future__ import annotations

import asyncio
import contextvars

from conveyor import Conveyor, WorkerSettings
from conveyor.broker.operations import Delivery
from conveyor.context import current_job
from conveyor.job import JobState
from conveyor.worker.slots import Handoff

from .conftest import worker_task


def _d(level: str, entry: str) -> Delivery:
    return Delivery("q", level, entry, {})


async def test_handoff_gives_the_most_urgent_level_first() -> None:
    h = Handoff()
    for d in (_d("low", "1-0"), _d("normal", "2-0"), _d("high", "3-0"), _d("normal", "4-0")):
        h.put(d)
    assert len(h) == 4
    assert [h.take().entry_id for _ in range(4)] == ["3-0", "2-0", "4-0", "1-0"]  # type: ignore[union-attr]
    assert h.take() is None and len(h) == 0


async def test_a_parked_slot_wakes_for_a_delivery_and_on_close() -> None:
    h = Handoff()
    first = asyncio.create_task(h.next())
    second = asyncio.create_task(h.next())
    await asyncio.sleep(0)
    h.put(_d("normal", "1-0"))
    done, _ = await asyncio.wait({first, second}, timeout=1, return_when=asyncio.FIRST_COMPLETED)
    assert [t.result().entry_id for t in done] == ["1-0"]
    h.close()
    rest = await asyncio.wait_for(asyncio.gather(*({first, second} - done)), 1)
    assert rest == [None]


async def test_after_close_nothing_is_handed_out_and_everything_is_given_back() -> None:
    h = Handoff()
    h.put(_d("normal", "1-0"))
    h.close()
    h.put(_d("high", "2-0"))  # a fetch that was in flight at the stop
    assert h.take() is None
    assert await h.next() is None
    assert sorted(d.entry_id for d in h.leftovers()) == ["1-0", "2-0"]
    assert len(h) == 0


async def test_no_more_than_concurrency_jobs_run_at_once(app: Conveyor) -> None:
    running = 0
    peak = 0

    @app.task
    async def slow(i: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.02)
        running -= 1
        return i

    jobs = await slow.enqueue_many_async([(i,) for i in range(30)])
    async with worker_task(app, WorkerSettings(concurrency=3)):
        results = [await j.result_async(timeout=30) for j in jobs]
    assert results == list(range(30))
    assert peak == 3


async def test_jobs_that_never_await_leave_room_for_one_that_does(app: Conveyor) -> None:
    """A slot yields between runs of non-awaiting jobs, so a job waiting on I/O in another
    slot is not held up until the whole queue is drained."""
    order: list[str] = []
    all_ran = asyncio.Event()

    def ran(name: str) -> None:
        order.append(name)
        if len(order) == 2001:
            all_ran.set()

    @app.task
    async def quick(i: int) -> None:
        ran("quick")

    @app.task
    async def waits() -> None:
        await asyncio.sleep(0)
        ran("waits")

    first = await waits.enqueue_async()
    await quick.enqueue_many_async([(i,) for i in range(2000)])
    async with worker_task(app, WorkerSettings(concurrency=2, prefetch=500)):
        await first.result_async(timeout=30)
        await asyncio.wait_for(all_ran.wait(), 30)
    assert order.index("waits") < 200, order.index("waits")  # 500 if no slot ever yielded


async def test_each_job_runs_in_a_context_of_its_own(app: Conveyor) -> None:
    """One slot runs job after job; a ContextVar a job sets is not seen by the next."""
    tenant: contextvars.ContextVar[str] = contextvars.ContextVar("tenant", default="none")

    @app.task
    async def visit(i: int) -> list[str]:
        seen = [tenant.get(), current_job().id]
        tenant.set(f"job-{i}")
        await asyncio.sleep(0)
        return [*seen, tenant.get()]

    jobs = await visit.enqueue_many_async([(i,) for i in range(20)])
    async with worker_task(app, WorkerSettings(concurrency=1)):
        results = [await j.result_async(timeout=30) for j in jobs]
    assert results == [["none", j.id, f"job-{i}"] for i, j in enumerate(jobs)]


async def test_a_job_raising_cancelled_error_fails_and_its_slot_goes_on(app: Conveyor) -> None:
    """A task that awaits something another task cancelled fails like any other error."""

    @app.task(retries=0)
    async def doomed() -> None:
        waiter = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_soon(waiter.cancel)
        await waiter

    @app.task
    async def after(i: int) -> int:
        return i

    bad = await doomed.enqueue_async()
    good = await after.enqueue_many_async([(i,) for i in range(5)])
    async with worker_task(app, WorkerSettings(concurrency=1)):
        assert [await j.result_async(timeout=30) for j in good] == list(range(5))
        info = await bad.info_async()
    assert info.state is JobState.DEAD and info.record is not None
    assert "CancelledError" in (info.record.error or "")
