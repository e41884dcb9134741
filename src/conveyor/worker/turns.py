"""One budget of job starts per event-loop turn, shared by every slot of a worker.

A job that never awaits does not give the loop back, and the loop polls sockets only between
turns: if each of hundreds of slots ran even one job per turn, a turn would last tens of
milliseconds and every reply (an ack batch's above all, then the next fetch's) would wait
for it. So all slots together start at most ``limit`` jobs per turn; a slot that finds the
budget spent parks, in order, and a callback at the start of the next turn (scheduled with
call_soon, so it runs after the loop has polled I/O) refills the budget and wakes that many
parked slots. A turn then costs a few dozen short jobs, at any concurrency, and the slots
that keep running in one step save the task switches a yield per job would cost.
"""

from __future__ import annotations

import asyncio
from collections import deque


class TurnBudget:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        #: job starts granted since the last refill (parked slots woken count at once)
        self.used = 0
        self._parked: deque[asyncio.Future[None]] = deque()
        self._refill_pending = False

    def take(self) -> bool:
        """Spend one start of this turn's budget; False when it is spent (then ``wait``)."""
        if self.used < self.limit:
            self.used += 1
            self._schedule_refill()
            return True
        return False

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
        self.used = 0
        parked = self._parked
        while parked and self.used < self.limit:
            waiter = parked.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self.used += 1
        if self.used or parked:
            self._schedule_refill()

    def release_all(self) -> None:
        """Wake every parked slot now (the worker is stopping: they find no work and end)."""
        while self._parked:
            waiter = self._parked.popleft()
            if not waiter.done():
                waiter.set_result(None)
