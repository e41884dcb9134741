"""Hands fetched deliveries to a fixed set of slot loops, most urgent level first.

A worker runs ``concurrency`` long-lived slot loops instead of one asyncio task per job:
creating, scheduling and reaping a task cost more than a short job itself. A slot that finds
work waiting takes it without a trip through the event loop; an idle one parks on a future
until a delivery arrives or the worker stops.
"""

from __future__ import annotations

import asyncio
from collections import deque

from ..broker.operations import Delivery
from ..keys import LEVELS


class Handoff:
    """Deliveries waiting for a slot (their leases are kept), and the slots waiting for them."""

    def __init__(self) -> None:
        self._levels: dict[str, deque[Delivery]] = {level: deque() for level in LEVELS}
        self._order = [self._levels[level] for level in LEVELS]
        self._size = 0
        self._idle: deque[asyncio.Future[None]] = deque()
        self.closed = False

    def __len__(self) -> int:
        return self._size

    def put(self, d: Delivery) -> None:
        self._levels[d.level].append(d)
        self._size += 1
        while self._idle:
            waiter = self._idle.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

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
            waiter = asyncio.get_running_loop().create_future()
            self._idle.append(waiter)
            try:
                await waiter
            finally:
                if not waiter.done():  # cancelled while parked
                    waiter.cancel()

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
