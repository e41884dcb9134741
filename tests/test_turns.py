"""The turn budget shared by a worker's slots (worker/turns.py), on a real event loop."""

from __future__ import annotations

import asyncio
import time

from conveyor.worker.turns import TurnBudget


def test_one_slot_may_take_the_whole_count_in_a_turn_then_waits_for_the_next() -> None:
    async def main() -> tuple[int, int]:
        budget = TurnBudget(32)
        first = sum(budget.take() for _ in range(100))
        await budget.wait()  # parked until the next turn's refill grants it a start
        second = 1 + sum(budget.take() for _ in range(100))
        return first, second

    assert asyncio.run(main()) == (32, 32)


def test_a_turn_that_lasted_its_seconds_grants_no_more_starts() -> None:
    async def main() -> int:
        budget = TurnBudget(1000, seconds=0.01)
        granted = 0
        while budget.take():
            granted += 1
            time.sleep(0.001)  # noqa: ASYNC251 - a job of a millisecond that never awaits
        return granted

    granted = asyncio.run(main())
    assert 8 <= granted <= 24  # about 10 ms of 1 ms jobs, the clock read every 8 starts


def test_a_refill_wakes_at_most_its_share_of_parked_slots() -> None:
    async def main() -> list[int]:
        loop = asyncio.get_running_loop()
        budget = TurnBudget(32, wake=4)
        while budget.take():
            pass
        turns = [0]

        def tick() -> None:  # counts the loop's turns
            turns[0] += 1
            loop.call_soon(tick)

        woken: list[int] = []

        async def slot() -> None:
            await budget.wait()
            woken.append(turns[0])

        tick()
        await asyncio.gather(*(slot() for _ in range(10)))
        return woken

    woken = asyncio.run(main())
    assert len(woken) == 10
    assert max(woken.count(t) for t in set(woken)) == 4  # never more than 4 in one turn
