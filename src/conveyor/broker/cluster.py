"""What the Broker needs to know about Redis Cluster, and nothing else does.

redis-py's cluster clients route single commands and pipelines by slot themselves. Three
things they cannot do for us: send a call exactly once (their retry resends a command whose
reply was only late), block on several streams that live on different nodes, and reach one
node's plain connection for either. Both faces share the routing here: which node owns a
call's slot, and a plain client per node for what needs one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis.asyncio.cluster
import redis.cluster
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    RedisClusterException,
    SlotNotCoveredError,
    TryAgainError,
)

from ..errors import ConfigurationError, ConnectionFailed, ConveyorError, redact_url

#: Whether complete.lua and dead.lua publish with the command the worker passes them
#: (``Broker.publish_command``: SPUBLISH on Cluster with Redis 7+). Until they do, they
#: PUBLISH, which Redis Cluster broadcasts to every node, and waiters SUBSCRIBE.
SCRIPTS_PUBLISH_SHARDED = True

#: Errors that mean "the topology changed and nothing ran": refresh the slot map and resend.
REROUTE = (AskError, ClusterDownError, TryAgainError, SlotNotCoveredError)

Address = tuple[str, int]


def is_cluster(client: Any) -> bool:
    return isinstance(client, (redis.cluster.RedisCluster, redis.asyncio.cluster.RedisCluster))


def first_key(command: Sequence[Any]) -> Any:
    """The key a command is routed by: a script's first key, else the command's first
    argument (every keyed command Conveyor sends puts its key first)."""
    name = str(command[0]).upper()
    if name in ("EVALSHA", "EVAL"):
        if int(command[2]) == 0:
            raise RedisClusterException(f"{name} without keys cannot be routed on Redis Cluster")
        return command[3]
    return command[1]


def node_of(client: Any, key: Any) -> Address:
    """The (host, port) of the primary owning ``key``'s slot, from the client's slot map."""
    node = client.nodes_manager.get_node_from_slot(client.keyslot(key))
    return node.host, node.port


def group_by_node(client: Any, commands: Sequence[Sequence[Any]]) -> dict[Address, list[int]]:
    """Positions of ``commands`` per owning primary, in order."""
    groups: dict[Address, list[int]] = {}
    for i, command in enumerate(commands):
        groups.setdefault(node_of(client, first_key(command)), []).append(i)
    return groups


def primaries(client: Any) -> list[Address]:
    return [(n.host, n.port) for n in client.get_primaries()]


CROSSSLOT_FIX = (
    "keys in different hash slots in one command or script ({what}): on Redis Cluster every "
    "key of one call must share a hash tag, e.g. '{{myqueue}}:a' and '{{myqueue}}:b'"
)


def topology_error(url: str, exc: Exception) -> ConveyorError | None:
    """One-line errors for a URL of the wrong topology and for keys across slots."""
    text = str(exc)
    where = redact_url(url)
    if "cluster support disabled" in text or "This instance has cluster support disabled" in text:
        return ConfigurationError(
            f"{where} is a Redis Cluster URL, but the server is not a cluster "
            "(cluster support disabled): use redis://host:port for a standalone Redis"
        )
    plain = not url.split("://", 1)[0].endswith("+cluster")
    if plain and (text.startswith("MOVED") or "CLUSTERDOWN" in text):
        return ConfigurationError(
            f"{where} is a Redis Cluster node (it answered {text.split()[0]}): "
            "use redis+cluster://host:port so Conveyor follows the cluster's slots"
        )
    if text.startswith("CROSSSLOT") or "same slot" in text or "same key slot" in text:
        return ConfigurationError(f"Redis at {where} refused " + CROSSSLOT_FIX.format(what=text))
    if isinstance(exc, (*REROUTE, MovedError)):
        # a failover or a resharding in progress: callers retry ConnectionFailed
        return ConnectionFailed(
            url,
            ConnectionError(" ".join(text.split()) or type(exc).__name__),
            fix="The cluster is moving slots or failing over; retried until it settles.",
        )
    if isinstance(exc, RedisClusterException):
        if "cannot be connected" in text or "Please provide at least one reachable" in text:
            return ConnectionFailed(url, ConnectionError("no seed node of the cluster answered"))
        return ConnectionFailed(url, ConnectionError(text.splitlines()[0] if text else repr(exc)))
    return None


def check_topology(mode: str, url: str, cluster_url: bool) -> None:
    """A plain URL at a cluster node works only for keys in that node's slots, and fails
    later with MOVED: say so at start instead."""
    if mode == "cluster" and not cluster_url:
        raise ConfigurationError(
            f"Redis at {redact_url(url)} is a Redis Cluster node: use "
            "redis+cluster://host:port (any node as the seed) so Conveyor follows the slots"
        )
