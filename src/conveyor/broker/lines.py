"""Batches sent one after another on one held connection, so a caller works while Redis does.

A bulk enqueue sends a batch, encodes the next while Redis adds the first, then reads the
first's replies and only then sends the next. Redis and the producer work side by side
(measured: about 1.4x the jobs/s of sending and waiting in turn), and there is never more than
one batch in flight: a batch refused at the memory limit, or one whose reply never came, is
still the last one sent, so what was added before it is exactly the batches before it.

Calls that are all safe to repeat (unique enqueues), Redis Cluster (a batch's calls go to
several nodes) and enqueues that wait for replicas go through ``call_many`` at ``read()``
instead: the same replies and errors, without the overlap.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from ..settings import Durability
from . import once
from .calls import Call
from .gateway import Broker, _command, _missing_scripts, _parse_all


class _Line:
    def __init__(
        self, broker: Broker, durability: Durability | None, conn: Any = None, flagged: bool = False
    ) -> None:
        self.broker = broker
        self.durability = durability
        self.conn = conn
        self.flagged = flagged
        self._calls: Sequence[Call[Any]] = ()
        self._commands: list[tuple[Any, ...]] | None = None


class Line(_Line):
    """``send(calls)``, then ``read()`` their parsed replies (what ``call_many`` returns)."""

    def send(self, calls: Sequence[Call[Any]]) -> None:
        self._calls, self._commands = calls, _held_commands(self.conn, calls, self.flagged)
        if self._commands is not None:
            with self.broker._translated():
                once.send_pipeline(self.broker.url, self.conn, self._commands)

    def read(self) -> list[Any]:
        calls, commands = self._calls, self._commands
        if commands is None:
            return self.broker.call_many(calls, self.durability)
        b = self.broker
        with b._translated():
            replies = once.read_pipeline(b.url, b.client, self.conn, commands)
            missing = _missing_scripts(replies)  # nothing of those ran: load and send again
            if missing:
                loads = [b._load(s.variant(self.flagged)[1]) for s in _scripts(calls, missing)]
                again = [commands[i] for i in missing]
                once.send_pipeline(b.url, self.conn, [*loads, *again])
                got = once.read_pipeline(b.url, b.client, self.conn, [*loads, *again])
                _raise_failed_loads(got[: len(loads)])
                for i, r in zip(missing, got[len(loads) :], strict=True):
                    replies[i] = r
        return _parse_all(calls, replies, b.url)


class ALine(_Line):
    """The asyncio twin of :class:`Line`."""

    async def send(self, calls: Sequence[Call[Any]]) -> None:
        self._calls, self._commands = calls, _held_commands(self.conn, calls, self.flagged)
        if self._commands is not None:
            with self.broker._translated():
                await once.asend_pipeline(self.broker.url, self.conn, self._commands)

    async def read(self) -> list[Any]:
        calls, commands = self._calls, self._commands
        if commands is None:
            return await self.broker.acall_many(calls, self.durability)
        b = self.broker
        client = b.aclient
        with b._translated():
            replies = await once.aread_pipeline(b.url, client, self.conn, commands)
            missing = _missing_scripts(replies)
            if missing:
                loads = [b._load(s.variant(self.flagged)[1]) for s in _scripts(calls, missing)]
                again = [commands[i] for i in missing]
                await once.asend_pipeline(b.url, self.conn, [*loads, *again])
                got = await once.aread_pipeline(b.url, client, self.conn, [*loads, *again])
                _raise_failed_loads(got[: len(loads)])
                for i, r in zip(missing, got[len(loads) :], strict=True):
                    replies[i] = r
        return _parse_all(calls, replies, b.url)


@contextlib.contextmanager
def line(broker: Broker, durability: Durability | None) -> Iterator[Line]:
    """A Line for one bulk enqueue, holding a connection where it can overlap."""
    if durability is not None or broker.cluster:
        yield Line(broker, durability)
        return
    with broker._translated():
        flagged = broker._flagged()  # INFO, before the connection is held
        with once.held(broker.client) as conn:
            yield Line(broker, None, conn, flagged)


@contextlib.asynccontextmanager
async def aline(broker: Broker, durability: Durability | None) -> AsyncIterator[ALine]:
    if durability is not None or broker.cluster:
        yield ALine(broker, durability)
        return
    with broker._translated():
        flagged = await broker._aflagged()
        async with once.aheld(broker.aclient) as conn:
            yield ALine(broker, None, conn, flagged)


def _held_commands(
    conn: Any, calls: Sequence[Call[Any]], flagged: bool
) -> list[tuple[Any, ...]] | None:
    """The commands to send on the held connection, or None where ``call_many`` must send
    them (no connection held, or every call safe to repeat: redis-py may retry those)."""
    if conn is None or all(c.retry_safe for c in calls):
        return None
    return [_command(c, flagged) for c in calls]


def _scripts(calls: Sequence[Call[Any]], positions: list[int]) -> list[Any]:
    found = {id(calls[i].script): calls[i].script for i in positions}
    return [s for s in found.values() if s is not None]


def _raise_failed_loads(replies: list[Any]) -> None:
    for r in replies:
        if isinstance(r, Exception):
            raise r
