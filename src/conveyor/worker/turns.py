"""One budget of job starts per event-loop turn, shared by every slot of a worker.

A job that never awaits does not give the loop back, and the loop polls sockets only between
turns: if each of hundreds of slots ran even one job per turn, a turn would last tens of
milliseconds and every reply (an ack batch's above all, then the next fetch's) would wait
for it. So all slots together start at most ``limit`` jobs per turn, and no more once the
turn has lasted ``seconds``; a slot that finds the budget spent parks, in order, and a
callback at the start of the next turn (scheduled with call_soon, so it runs after the loop
has polled I/O) refills the budget and wakes parked slots. A turn then lasts about
``seconds`` at any concurrency, and the slots that keep running in one step save the task
switches a yield per job would cost.

Why time and not only a count: parking and waking a slot costs about as much as a short
job. With a small count (8 was used first) and every parked slot woken for one start, each
job of a microseconds-long task cost a park and a wake, a sixth of the worker's CPU; a
large count alone would let jobs of a millisecond each hold the loop for tens of them.

A refill wakes at most ``wake`` parked slots (a quarter of the budget by default), each
granted one start; the rest of the budget goes to slots that keep running after a job, so
the first woken slot running short jobs back to back does not leave every other woken slot
to find the budget spent and park again.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from time import perf_counter

#: How often (in starts) take() reads the clock: reading it costs more than the check.
_CLOCK_EVERY = 8


class TurnBudget:
    def __init__(self, limit: int, seconds: float = float("inf"), wake: int | None = None) -> None:
        self.limit = limit
        self.seconds = seconds
        #: most parked slots one refill wakes
        self.wake = max(1, limit // 4) if wake is None else wake
        #: job starts granted since the last refill (parked slots woken count at once)
        self.used = 0
        self._turn_started = 0.0
        self._parked: deque[asyncio.Future[None]] = deque()
        self._refill_pending = False
        #: called by a refill that found no slot parked here: slots parked elsewhere for
        #: lack of work may be woken (slots.Handoff.wake_some)
        self.on_quiet_refill: Callable[[], None] | None = None

    @property
    def parked(self) -> int:
        """Slots waiting for a start (each holds a job it will run)."""
        return len(self._parked)

    def take(self) -> bool:
        """Spend one start of this turn's budget; False when it is spent (then ``wait``)."""
        used = self.used
        if used >= self.limit:
            return False
        if not self._refill_pending:
            self._turn_started = perf_counter()  # the first start of a new turn
            self._schedule_refill()
        elif used % _CLOCK_EVERY == 0 and perf_counter() - self._turn_started > self.seconds:
            self.used = self.limit  # the turn has lasted long enough: spent
            return False
        self.used = used + 1
        return True

    async def wait(self) -> None:
        """Park until a later turn grants this slot a start (already counted when it wakes)."""
        waiter = asyncio.get_running_loop().create_future()
        self._parked.append(waiter)
        self._schedule_refill()
        try:
            await waiter
        finally:
            if not waiter.done():  # cancelled while parked: pass the grant on, if any
                waiter.cancel()

    def _schedule_refill(self) -> None:
        if not self._refill_pending:
            self._refill_pending = True
            asyncio.get_running_loop().call_soon(self._refill)

    def _refill(self) -> None:
        self._refill_pending = False
        parked = self._parked
        self._turn_started = perf_counter()
        self.used = 0
        wake = self.wake
        while parked and self.used < wake:
            waiter = parked.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self.used += 1
        if self.used or parked:
            self._schedule_refill()
        elif self.on_quiet_refill is not None:
            self.on_quiet_refill()

    def release_all(self) -> None:
        """Wake every parked slot now (the worker is stopping: they find no work and end)."""
        while self._parked:
            waiter = self._parked.popleft()
            if not waiter.done():
                waiter.set_result(None)
