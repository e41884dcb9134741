"""Where a call goes on Redis Cluster when it must be sent exactly once (see once.py).

redis-py's cluster clients route by slot and retry on their own, which would resend a
command whose reply was only late. Calls that must not run twice go instead to the owning
node's own plain client, once; a reply proving nothing ran (MOVED, CLUSTERDOWN, TRYAGAIN) or
a node that cannot be reached before sending makes the slot map be read again, and the
call is sent to the slot's new owner. Off Cluster these send on the one client.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from typing import Any

import redis
import redis.asyncio
from redis.exceptions import MovedError, RedisClusterException

from . import cluster, once
from .cluster import Address
from .connection import ClientOptions, connect_async, connect_sync, node_url


class Routing:
    """The Broker's send-once routing, per node on Cluster (a mixin: one Broker class)."""

    url: str
    options: ClientOptions
    node_options: ClientOptions
    cluster: bool
    _nodes: dict[Address, redis.Redis]
    _anodes: weakref.WeakKeyDictionary[
        asyncio.AbstractEventLoop, dict[Address, redis.asyncio.Redis]
    ]

    @property
    def client(self) -> Any:
        raise NotImplementedError

    @property
    def aclient(self) -> Any:
        raise NotImplementedError

    def node_client(self, address: Address) -> redis.Redis:
        """A plain client of one cluster node (its own pool, Conveyor's options)."""
        client = self._nodes.get(address)
        if client is None:
            client = connect_sync(node_url(self.url, *address), self.node_options)
            self._nodes[address] = client
        return client

    def _rerouted(self, attempt: int, exc: Exception) -> None:
        """Before sending again after a moved slot or a node that cannot be reached (nothing
        was sent): wait a little, then re-read the slot map."""
        if attempt + 1 >= max(1, self.options.retries):
            raise exc
        time.sleep(min(self.options.backoff_cap, self.options.backoff_base * 2**attempt))
        with contextlib.suppress(redis.RedisError, RedisClusterException):
            self.client.nodes_manager.initialize()

    def _send_once(self, *command: Any) -> Any:
        if not self.cluster:
            return once.send_once(self.url, self.client, command)
        attempt = 0
        while True:
            node = self.node_client(cluster.node_of(self.client, cluster.first_key(command)))
            try:
                return once.send_once(self.url, node, command)
            except (MovedError, *cluster.REROUTE, redis.ConnectionError, redis.TimeoutError) as exc:
                self._rerouted(attempt, exc)
                attempt += 1

    def _pipeline_once(
        self,
        commands: list[tuple[Any, ...]],
        tail: tuple[tuple[Any, ...], list[Any]] | None = None,
    ) -> list[Any]:
        """Send each command once; on Cluster, each node's part on that node's connection,
        followed by ``tail``'s command (a WAIT) whose replies go to ``tail``'s list. A part
        that could not connect, or that a node refused as moved, is sent again after the
        slot map is re-read (nothing of it ran)."""
        if not self.cluster:
            return once.pipeline_once(self.url, self.client, commands)
        replies: list[Any] = [None] * len(commands)
        todo = list(range(len(commands)))
        attempt = 0
        while todo:
            groups = cluster.group_by_node(self.client, [commands[i] for i in todo])
            again: list[int] = []
            for address, positions in groups.items():
                mine = [todo[p] for p in positions]
                part = [commands[i] for i in mine] + ([tail[0]] if tail else [])
                try:
                    got = once.pipeline_once(self.url, self.node_client(address), part)
                except (redis.ConnectionError, redis.TimeoutError):
                    again += mine  # not connected: nothing of this node's part was sent
                    continue
                if tail:
                    tail[1].append(got.pop())
                for i, reply in zip(mine, got, strict=True):
                    moved = isinstance(reply, (MovedError, *cluster.REROUTE))
                    replies[i] = reply
                    if moved:
                        again.append(i)
            if again:
                self._rerouted(attempt, redis.ConnectionError("slots moved"))
                attempt += 1
            todo = sorted(again)
        return replies

    def anode_client(self, address: Address) -> redis.asyncio.Redis:
        """The asyncio twin of :meth:`node_client`, per event loop."""
        nodes = self._anodes.setdefault(asyncio.get_running_loop(), {})
        client = nodes.get(address)
        if client is None:
            client = connect_async(node_url(self.url, *address), self.node_options)
            nodes[address] = client
        return client

    async def _arerouted(self, attempt: int, exc: Exception) -> None:
        if attempt + 1 >= max(1, self.options.retries):
            raise exc
        await asyncio.sleep(min(self.options.backoff_cap, self.options.backoff_base * 2**attempt))
        with contextlib.suppress(redis.RedisError, RedisClusterException):
            await self.aclient.nodes_manager.initialize()

    async def _asend_once(self, *command: Any) -> Any:
        if not self.cluster:
            return await once.asend_once(self.url, self.aclient, command)
        client = self.aclient
        if not client.nodes_manager.slots_cache:
            await client.initialize()
        attempt = 0
        while True:
            node = self.anode_client(cluster.node_of(client, cluster.first_key(command)))
            try:
                return await once.asend_once(self.url, node, command)
            except (MovedError, *cluster.REROUTE, redis.ConnectionError, redis.TimeoutError) as exc:
                await self._arerouted(attempt, exc)
                attempt += 1

    async def _apipeline_once(
        self,
        client: Any,
        commands: list[tuple[Any, ...]],
        tail: tuple[tuple[Any, ...], list[Any]] | None = None,
    ) -> list[Any]:
        if not self.cluster:
            return await once.apipeline_once(self.url, client, commands)
        if not client.nodes_manager.slots_cache:
            await client.initialize()
        replies: list[Any] = [None] * len(commands)
        todo = list(range(len(commands)))
        attempt = 0
        while todo:
            groups = cluster.group_by_node(client, [commands[i] for i in todo])
            parts = [[todo[p] for p in positions] for positions in groups.values()]
            results = await asyncio.gather(
                *(
                    once.apipeline_once(
                        self.url,
                        self.anode_client(a),
                        [commands[i] for i in mine] + ([tail[0]] if tail else []),
                    )
                    for a, mine in zip(groups, parts, strict=True)
                ),
                return_exceptions=True,
            )
            again: list[int] = []
            for mine, got in zip(parts, results, strict=True):
                if isinstance(got, (redis.ConnectionError, redis.TimeoutError)):
                    again += mine  # not connected: nothing of this node's part was sent
                    continue
                if isinstance(got, BaseException):
                    raise got
                if tail:
                    tail[1].append(got.pop())
                for i, reply in zip(mine, got, strict=True):
                    replies[i] = reply
                    if isinstance(reply, (MovedError, *cluster.REROUTE)):
                        again.append(i)
            if again:
                await self._arerouted(attempt, redis.ConnectionError("slots moved"))
                attempt += 1
            todo = sorted(again)
        return replies
