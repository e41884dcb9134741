"""A worker's idle wait: blocking reads on its ready streams that ``unblock()`` ends at once.

One XREADGROUP BLOCK can name many streams only when one server holds them all. On Redis
Cluster a worker's queues live on several nodes (CROSSSLOT otherwise), so there is one
blocking read per node, all running at once: the first to return wakes the worker, and the
others keep waiting for the next call instead of being cancelled, because a cancelled read
may already have moved entries into the pending list. Each read has a connection of its own
(``single_connection``), so its CLIENT ID is the one CLIENT UNBLOCK must name.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import replace

from . import cluster
from .calls import command
from .connection import node_url
from .gateway import Broker
from .operations import Delivery, block_read

log = logging.getLogger("conveyor.worker")

#: The single server of a standalone or Sentinel URL.
ONE: cluster.Address = ("", 0)


class BlockingReader:
    """Blocking reads over a worker's streams, one connection per server that holds them."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self._readers: dict[cluster.Address, Broker] = {}
        self._ids: dict[cluster.Address, int] = {}
        self._pending: dict[cluster.Address, asyncio.Task[list[Delivery]]] = {}
        self._background: set[asyncio.Task[None]] = set()

    async def _by_server(
        self, streams: Mapping[str, tuple[str, str]]
    ) -> dict[cluster.Address, dict[str, tuple[str, str]]]:
        if not self.broker.cluster:
            return {ONE: dict(streams)}
        client = self.broker.aclient
        if not client.nodes_manager.slots_cache:
            await client.initialize()
        out: dict[cluster.Address, dict[str, tuple[str, str]]] = {}
        for stream, where in streams.items():
            out.setdefault(cluster.node_of(client, stream), {})[stream] = where
        return out

    def _reader(self, address: cluster.Address) -> Broker:
        reader = self._readers.get(address)
        if reader is None:
            url = self.broker.url if address == ONE else node_url(self.broker.url, *address)
            reader = Broker(url, replace(self.broker.options, single_connection=True))
            self._readers[address] = reader
        return reader

    async def _read(
        self,
        address: cluster.Address,
        streams: dict[str, tuple[str, str]],
        consumer: str,
        count: int,
        block_ms: int,
    ) -> list[Delivery]:
        reader = self._reader(address)
        try:
            if address not in self._ids:
                self._ids[address] = await reader.acall(command("CLIENT", "ID", parse=int))
            return await reader.acall(block_read(streams, consumer, count, block_ms))
        except BaseException:
            self._ids.pop(address, None)  # a reconnect gets a new id
            raise

    async def read(
        self, streams: Mapping[str, tuple[str, str]], consumer: str, count: int, block_ms: int
    ) -> list[Delivery]:
        """Wait up to ``block_ms`` for entries on any of ``streams``; what any server's read
        returned. A failed read is raised only when no other read brought entries."""
        for address, mine in (await self._by_server(streams)).items():
            if address not in self._pending:
                self._pending[address] = asyncio.get_running_loop().create_task(
                    self._read(address, mine, consumer, count, block_ms)
                )
        await asyncio.wait(self._pending.values(), return_when=asyncio.FIRST_COMPLETED)
        return self._collect()

    def _collect(self) -> list[Delivery]:
        got: list[Delivery] = []
        error: BaseException | None = None
        for address, task in list(self._pending.items()):
            if not task.done():
                continue
            del self._pending[address]
            if task.cancelled():
                continue
            exc = task.exception()
            if exc is not None:
                error = error or exc
                continue
            got.extend(task.result())
        if error is not None and not got:
            raise error
        if error is not None:
            log.warning("a blocking read failed (retried on the next wait): %s", error)
        return got

    def unblock(self) -> None:
        """End every blocking read now: CLIENT UNBLOCK on each server, from another client."""
        for address, client_id in list(self._ids.items()):
            if address in self._pending:
                task = asyncio.get_running_loop().create_task(self._unblock(address, client_id))
                self._background.add(task)
                task.add_done_callback(self._background.discard)

    async def _unblock(self, address: cluster.Address, client_id: int) -> None:
        try:
            unblock = ("CLIENT", "UNBLOCK", client_id)
            if address == ONE:
                await self.broker.acall(command(*unblock))
            else:
                await self.broker.anode_client(address).execute_command(*unblock)
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
