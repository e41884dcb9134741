"""Hands fetched deliveries to a fixed set of slot loops, most urgent level first.

A worker runs ``concurrency`` long-lived slot loops instead of one asyncio task per job:
creating, scheduling and reaping a task cost more than a short job itself. A slot that finds
work waiting takes it without a trip through the event loop; an idle one parks on a future
until a delivery arrives or the worker stops.

Parked slots are woken only as far as they can start work (``wake_some``): none while a slot
waits for the turn budget (turns.py), since that slot will run the waiting deliveries back to
back; one for new deliveries; and, at a turn's refill that finds no slot waiting for the
budget (the running ones await), as many as a turn may start, never more than deliveries
wait. Waking one slot per delivery made every short job at -c 100 cost a park and a wake here
and another on the turn budget (0.9 parks per job against 0.3 at -c 10, a fifth more CPU per
job); jobs that await still reach every slot, a turn's worth per event-loop turn.
"""

from __future__ import annotations

import asyncio
from collections import deque

from ..broker.operations import Delivery
from ..keys import LEVELS
from .turns import TurnBudget


class Handoff:
    """Deliveries waiting for a slot (their leases are kept), and the slots waiting for them."""

    def __init__(self, turns: TurnBudget | None = None) -> None:
        self._levels: dict[str, deque[Delivery]] = {level: deque() for level in LEVELS}
        self._order = [self._levels[level] for level in LEVELS]
        self._size = 0
        #: parked slots: each future's result is True when woken for work, None at close
        self._idle: deque[asyncio.Future[bool | None]] = deque()
        #: slots woken for work that have not taken it yet
        self._waking = 0
        self._turns = turns
        if turns is not None:  # a quiet refill wakes as many as a turn may start
            turns.on_quiet_refill = lambda: self.wake_some(turns.limit)
        self.closed = False

    def __len__(self) -> int:
        return self._size

    def put(self, d: Delivery) -> None:
        self._levels[d.level].append(d)
        self._size += 1
        # without a turn budget no refill wakes more: a slot for each delivery waiting
        self.wake_some(1 if self._turns is not None else self._size)

    def wake_some(self, most: int) -> None:
        """Wake up to ``most`` parked slots for the deliveries waiting (see the module's
        docstring)."""
        turns = self._turns
        if turns is not None and turns.parked:
            return
        idle = self._idle
        while idle and self._waking < min(most, self._size):
            waiter = idle.popleft()
            if not waiter.done():
                waiter.set_result(True)
                self._waking += 1

    def take(self) -> Delivery | None:
        """The most urgent waiting delivery, or None (always None once closed)."""
        if self._size and not self.closed:
            for waiting in self._order:
                if waiting:
                    self._size -= 1
                    return waiting.popleft()
        return None

    async def next(self) -> Delivery | None:
        """Wait for a delivery; None once the worker stops taking new jobs."""
        while True:
            d = self.take()
            if d is not None or self.closed:
                return d
            waiter: asyncio.Future[bool | None] = asyncio.get_running_loop().create_future()
            self._idle.append(waiter)
            try:
                await waiter
            finally:
                if not waiter.done():  # cancelled while parked
                    waiter.cancel()
                elif not waiter.cancelled() and waiter.result():
                    self._waking -= 1

    def close(self) -> None:
        """Stop handing out work: parked slots return, busy ones end after their job."""
        self.closed = True
        while self._idle:
            waiter = self._idle.popleft()
            if not waiter.done():
                waiter.set_result(None)

    def leftovers(self) -> list[Delivery]:
        """Everything not handed out (deliveries put after close() included), emptied."""
        left = [d for waiting in self._order for d in waiting]
        for waiting in self._order:
            waiting.clear()
        self._size = 0
        return left
