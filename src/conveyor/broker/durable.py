"""Durability on request, sans-IO: what to send after an enqueue and how to read it.

``WAIT n ms`` counts the replicas that have every write *of its own connection* so far, so
it must follow the enqueue on the connection that sent it (and, on Cluster, on the node that
holds the queue): the gateway sends both in one pipeline on one connection, per node.
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigurationError, NotReplicated, redact_url
from ..settings import Durability
from .server import ServerInfo


def wait_command(d: Durability, info: ServerInfo, url: str) -> tuple[Any, ...]:
    """WAIT, or WAITAOF when AOF fsyncs are asked for and the server has it."""
    if not d.aof:
        return ("WAIT", d.replicas, d.timeout_ms)
    if not info.has_waitaof:
        have = ".".join(map(str, info.version))
        raise ConfigurationError(
            f"Durability(aof=True) needs WAITAOF (Redis 7.2+), and Redis at {redact_url(url)} "
            f"is {have}: upgrade Redis, or use Durability(aof=False) to wait for replicas only"
        )
    return ("WAITAOF", 1, d.replicas, d.timeout_ms)


def check(d: Durability, replies: list[Any], url: str, added: list[Any]) -> None:
    """Raise NotReplicated unless every node's WAIT (or WAITAOF) reply confirms enough."""
    for reply in replies:
        if isinstance(reply, Exception):
            raise ConfigurationError(
                f"Redis at {redact_url(url)} refused the durability wait: "
                f"{' '.join(str(reply).split())}"
            )
        if d.aof:
            local, replicas = (int(x) for x in reply)
            if local < 1:
                raise NotReplicated(
                    url, 1, 0, d.timeout, what="AOF fsyncs on the master", added=added
                )
            confirmed = replicas
        else:
            confirmed = int(reply)
        if confirmed < d.replicas:
            raise NotReplicated(url, d.replicas, confirmed, d.timeout, added=added)
