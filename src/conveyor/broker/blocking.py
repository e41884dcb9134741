"""A worker's idle wait: blocking reads on its ready streams that ``unblock()`` ends at once.

One XREADGROUP BLOCK can name many streams only when they share a hash slot on Redis
Cluster (CROSSSLOT otherwise, even on one node), so there is one blocking read per queue
(its levels share the queue's hash tag), all running at once: the first to return wakes the
worker, and the others keep waiting for the next call instead of being cancelled, because a
cancelled read may already have moved entries into the pending list. Each read has a
client of its own, used one call at a time, so its pool holds one connection and the CLIENT ID
read through it is the one CLIENT UNBLOCK must name.

Each read carries, in the same pipeline right after the XREADGROUP, an SCARD of the
cancelled set of each queue it reads: ``marked`` names the queues with a cancel pending, so
the worker checks its entries for cancel marks only then, with no extra round trip per read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from . import cluster
from .calls import Call, command
from .connection import node_url
from .gateway import Broker
from .operations import Delivery, block_read

log = logging.getLogger("conveyor.worker")

#: The single server of a standalone or Sentinel URL.
ONE: cluster.Address = ("", 0)
#: One blocking read: the server, and the slot of its streams (0 off Cluster).
Reader = tuple[cluster.Address, int]


class BlockingReader:
    """Blocking reads over a worker's streams, one connection per server that holds them."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self._readers: dict[Reader, Broker] = {}
        self._ids: dict[Reader, int] = {}
        self._pending: dict[Reader, asyncio.Task[tuple[list[Delivery], set[str]]]] = {}
        self._background: set[asyncio.Task[None]] = set()
        #: the queues whose cancelled set was not empty right after the reads collected last
        self.marked: set[str] = set()

    async def _by_server(
        self, streams: Mapping[str, tuple[str, str]]
    ) -> dict[Reader, dict[str, tuple[str, str]]]:
        if not self.broker.cluster:
            return {(ONE, 0): dict(streams)}
        client = self.broker.aclient
        if not client.nodes_manager.slots_cache:
            await client.initialize()
        out: dict[Reader, dict[str, tuple[str, str]]] = {}
        for stream, where in streams.items():
            key = (cluster.node_of(client, stream), client.keyslot(stream))
            out.setdefault(key, {})[stream] = where
        return out

    def _reader(self, key: Reader) -> Broker:
        reader = self._readers.get(key)
        if reader is None:
            node = key[0]
            url = self.broker.url if node == ONE else node_url(self.broker.url, *node)
            options = self.broker.options if node == ONE else self.broker.node_options
            # Not a single-connection client: redis-py sends a pipeline on a pooled
            # connection, never on the client's own one, so CLIENT ID must come from the
            # pool too. Used one call at a time, the pool holds exactly one connection.
            reader = Broker(url, replace(options, single_connection=False))
            self._readers[key] = reader
        return reader

    async def _read(
        self,
        key: Reader,
        streams: dict[str, tuple[str, str]],
        consumer: str,
        count: int,
        block_ms: int,
        cancelled: Mapping[str, str],
    ) -> tuple[list[Delivery], set[str]]:
        reader = self._reader(key)
        queues = sorted({queue for queue, _ in streams.values() if queue in cancelled})
        try:
            if key not in self._ids:
                self._ids[key] = await reader.acall(command("CLIENT", "ID", parse=int))
            calls: list[Call[Any]] = [block_read(streams, consumer, count, block_ms)]
            calls += [command("SCARD", cancelled[q], parse=int) for q in queues]
            got, *counts = await reader.acall_many(calls)
            return got, {q for q, n in zip(queues, counts, strict=True) if n > 0}
        except BaseException:
            self._ids.pop(key, None)  # a reconnect gets a new id
            raise

    async def read(
        self,
        streams: Mapping[str, tuple[str, str]],
        consumer: str,
        count: int,
        block_ms: int,
        cancelled: Mapping[str, str] | None = None,
    ) -> list[Delivery]:
        """Wait up to ``block_ms`` for entries on any of ``streams``; what any server's read
        returned. A failed read is raised only when no other read brought entries.
        ``cancelled`` maps a queue to its cancelled set (see ``marked``)."""
        for key, mine in (await self._by_server(streams)).items():
            # a slot that moved to another node leaves its old reader to finish; the next
            # read after it goes to the new owner
            if key not in self._pending:
                self._pending[key] = asyncio.get_running_loop().create_task(
                    self._read(key, mine, consumer, count, block_ms, cancelled or {})
                )
        await asyncio.wait(self._pending.values(), return_when=asyncio.FIRST_COMPLETED)
        return self._collect()

    def _collect(self) -> list[Delivery]:
        got: list[Delivery] = []
        self.marked = set()
        error: BaseException | None = None
        for key, task in list(self._pending.items()):
            if not task.done():
                continue
            del self._pending[key]
            if task.cancelled():
                continue
            exc = task.exception()
            if exc is not None:
                error = error or exc
                continue
            entries, marked = task.result()
            got.extend(entries)
            self.marked |= marked
        if error is not None and not got:
            raise error
        if error is not None:
            log.warning("a blocking read failed (retried on the next wait): %s", error)
        return got

    def unblock(self) -> None:
        """End every blocking read now: CLIENT UNBLOCK on each server, from another client."""
        for key, client_id in list(self._ids.items()):
            if key in self._pending:
                task = asyncio.get_running_loop().create_task(self._unblock(key, client_id))
                self._background.add(task)
                task.add_done_callback(self._background.discard)

    async def _unblock(self, key: Reader, client_id: int) -> None:
        try:
            unblock = ("CLIENT", "UNBLOCK", client_id)
            if key[0] == ONE:
                await self.broker.acall(command(*unblock))
            else:
                await self.broker.anode_client(key[0]).execute_command(*unblock)
        except Exception as exc:
            log.debug("could not unblock a fetch connection: %s", exc)

    async def drain(self, timeout: float = 2.0) -> list[Delivery]:
        """At stop: unblock, and return what reads still running brought (their entries are
        this worker's now, so shutdown hands them back with the rest)."""
        if not self._pending:
            return []
        self.unblock()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.wait(list(self._pending.values())), timeout=timeout)
        for task in self._pending.values():
            task.cancel()
        with contextlib.suppress(Exception):
            return self._collect()
        return []

    async def close(self) -> None:
        for task in self._pending.values():
            task.cancel()
        self._pending.clear()
        for reader in self._readers.values():
            with contextlib.suppress(Exception):
                await reader.aclose()
        self._readers.clear()

    def __repr__(self) -> str:
        return f"BlockingReader({sorted(self._readers)!r})"
