"""Pub/sub connections for job.result() waits, kept from one wait to the next.

A wait subscribes to its queue's completion channel, reads the job's state, and sleeps until
a message names the job. A fresh pub/sub per wait took a connection from the command pool and
closed it after, so the next command opened a new one: a TCP connect, a HELLO and a SUBSCRIBE
on every result(), most of a millisecond of the enqueue-to-result time. Here a wait borrows
an idle pub/sub, unsubscribes when it ends and gives it back; the unsubscribe's reply, and any
message that was on its way, are read and dropped by the next borrower. A pub/sub whose
connection failed is closed, never given back. Cluster URLs open one per wait, as before: a
sharded channel's connection depends on its slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import redis

#: Idle pub/subs kept per client: more waits at once open more, which close when they end.
KEEP = 8

Receive = Callable[[float], Any]
AsyncReceive = Callable[[float], Awaitable[Any]]


class PubSubs:
    """The idle pub/subs of one Broker: its sync client's, and each event loop's."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[Any] = []
        self._aidle: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, list[Any]]
        self._aidle = weakref.WeakKeyDictionary()

    @contextlib.contextmanager
    def subscribed(self, client: Any, channel: str, sharded: bool, keep: bool) -> Iterator[Receive]:
        """Subscribed to ``channel`` for the block: yields ``receive(timeout)`` (a message or
        None). ``keep``: reuse pub/subs across waits (not on a cluster)."""
        pubsub = self._take(client) if keep else client.pubsub(ignore_subscribe_messages=True)
        healthy = False
        try:
            if sharded:
                pubsub.ssubscribe(channel)
                yield lambda timeout: pubsub.get_sharded_message(timeout=timeout)
            else:
                pubsub.subscribe(channel)
                yield lambda timeout: pubsub.get_message(timeout=timeout)
            healthy = True
        except Exception as exc:
            # a wait that ended between reads (its timeout, the job's failure) leaves the
            # connection as clean as a return; a Redis error or an interrupt may not
            healthy = not isinstance(exc, redis.RedisError)
            raise
        finally:
            self._give(pubsub, channel, sharded, keep and healthy)

    def _take(self, client: Any) -> Any:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return client.pubsub(ignore_subscribe_messages=True)

    def _give(self, pubsub: Any, channel: str, sharded: bool, keep: bool) -> None:
        if keep:
            try:
                (pubsub.sunsubscribe if sharded else pubsub.unsubscribe)(channel)
            except redis.RedisError:
                keep = False
        if keep:
            with self._lock:
                if len(self._idle) < KEEP:
                    self._idle.append(pubsub)
                    return
        pubsub.close()

    @contextlib.asynccontextmanager
    async def asubscribed(
        self, client: Any, channel: str, sharded: bool, keep: bool
    ) -> AsyncIterator[AsyncReceive]:
        """The asyncio twin of subscribed(), with pub/subs kept per event loop."""
        idle = self._aidle.setdefault(asyncio.get_running_loop(), []) if keep else []
        pubsub = idle.pop() if idle else client.pubsub(ignore_subscribe_messages=True)
        healthy = False
        try:
            if sharded:
                await pubsub.ssubscribe(channel)
                yield lambda timeout: pubsub.get_sharded_message(timeout=timeout)
            else:
                await pubsub.subscribe(channel)
                yield lambda timeout: pubsub.get_message(timeout=timeout)
            healthy = True
        except Exception as exc:
            healthy = not isinstance(exc, redis.RedisError)  # as in subscribed()
            raise
        finally:
            if keep and healthy:
                try:
                    await (pubsub.sunsubscribe if sharded else pubsub.unsubscribe)(channel)
                except redis.RedisError:
                    healthy = False
            if keep and healthy and len(idle) < KEEP:
                idle.append(pubsub)
            else:
                await pubsub.aclose()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for pubsub in idle:
            pubsub.close()

    async def aclose(self) -> None:
        for pubsub in self._aidle.pop(asyncio.get_running_loop(), []):
            await pubsub.aclose()
