"""Slot loops: at most ``concurrency`` jobs at once, most urgent first, a clean stop."""

from __future__ import annotations

import asyncio
import contextvars

from conveyor import Conveyor, WorkerSettings
from conveyor.broker.operations import Delivery
from conveyor.context import current_job
from conveyor.job import JobState
from conveyor.worker.slots import Handoff
from conveyor.worker.turns import TurnBudget

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


async def test_without_a_turn_budget_each_delivery_wakes_a_slot() -> None:
    h = Handoff()
    slots = [asyncio.create_task(h.next()) for _ in range(4)]
    await asyncio.sleep(0)
    for i in range(3):
        h.put(_d("normal", f"{i}-0"))
    await asyncio.sleep(0)
    assert sorted(t.result().entry_id for t in slots if t.done()) == ["0-0", "1-0", "2-0"]  # type: ignore[union-attr]
    h.close()
    await asyncio.gather(*slots)


async def test_new_work_wakes_one_slot_and_a_quiet_refill_a_turns_worth() -> None:
    turns = TurnBudget(4)
    h = Handoff(turns)
    slots = [asyncio.create_task(h.next()) for _ in range(10)]
    await asyncio.sleep(0)
    for i in range(6):
        h.put(_d("normal", f"{i}-0"))
    await asyncio.sleep(0)
    assert sum(t.done() for t in slots) == 1  # one slot for new work, not one per delivery
    assert turns.take()  # that slot starts its job: the turn's refill follows
    await asyncio.sleep(0)  # a refill finding no slot waiting for the budget
    await asyncio.sleep(0)
    assert sum(t.done() for t in slots) == 1 + 4  # as many as a turn may start
    assert turns.take()
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert sum(t.done() for t in slots) == 6  # never more than deliveries wait
    h.close()
    await asyncio.gather(*slots)


async def test_no_slot_is_woken_while_one_waits_for_the_turn_budget_until_a_quiet_refill() -> None:
    """A slot parked on the budget holds a job and will run the waiting ones back to back;
    waking idle slots then only makes them park on the budget too. A refill that finds
    no slot waiting for it wakes them for what is left."""
    turns = TurnBudget(1, wake=4)
    h = Handoff(turns)
    idle = [asyncio.create_task(h.next()) for _ in range(3)]
    await asyncio.sleep(0)  # all three park for lack of work
    holder = asyncio.create_task(turns.wait())
    await asyncio.sleep(0)  # a slot holding a job parks for the next turn
    assert turns.parked == 1
    h.put(_d("normal", "1-0"))
    await asyncio.sleep(0)  # the refill grants the holder its start, and wakes no other
    assert turns.parked == 0 and not any(t.done() for t in idle)
    for _ in range(3):  # the next refill finds nobody parked on the budget
        await asyncio.sleep(0)
    assert holder.done()
    woken = [t for t in idle if t.done()]
    assert [t.result().entry_id for t in woken] == ["1-0"]  # type: ignore[union-attr]
    h.close()
    await asyncio.gather(*idle)


async def test_slots_that_await_all_get_work_at_high_concurrency(app: Conveyor) -> None:
    """Waking a few slots at a time still reaches every slot when jobs wait on I/O."""
    running = 0
    peak = 0
    gate = asyncio.Event()

    @app.task
    async def io(i: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        if peak == 200:
            gate.set()
        await asyncio.wait_for(gate.wait(), 10)
        running -= 1
        return i

    jobs = await io.enqueue_many_async([(i,) for i in range(400)])
    async with worker_task(app, WorkerSettings(concurrency=200)):
        results = [await j.result_async(timeout=30) for j in jobs]
    assert results == list(range(400))
    assert peak == 200
