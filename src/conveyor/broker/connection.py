"""Turn a URL into redis-py clients, sync and asyncio, chosen once for the topology.

Schemes: ``redis://``, ``rediss://`` (TLS), ``unix://``,
``redis+sentinel://[user:password@]host:port[,host:port...]/service_name[/db]`` and
``redis+cluster://[user:password@]host:port[,host:port...]`` (``rediss+cluster://`` for TLS).
The rest of Conveyor sees one client per face; only this module knows which kind it is.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import parse_qs, quote, unquote, urlsplit

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.retry
import redis.asyncio.sentinel
import redis.cluster
import redis.sentinel
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import AuthenticationError, AuthorizationError
from redis.retry import Retry

from ..errors import ConfigurationError
from .packing import client_kwargs, fits, packing_with_hiredis

DEFAULT_URL = "redis://127.0.0.1:6379/0"
T = TypeVar("T")


def retryable(error: Exception) -> bool:
    """Whether a reconnect can help: wrong or missing credentials fail the same way every
    time, so retrying them only delays the error by a minute of backoff."""
    return not isinstance(error, (AuthenticationError, AuthorizationError))


#: set while a retry loop runs: redis-py nests them (a connect's handshake runs a health-check
#: PING with a retry of its own), which multiplied 7 attempts into 49 and a minute of backoff.
_retrying: ContextVar[bool] = ContextVar("conveyor_retrying", default=False)


class _Retry(Retry):
    """redis-py's Retry that reports refused credentials at once and does not nest: inside
    another retry it runs once and lets the outer loop reconnect and try again."""

    def call_with_retry(
        self,
        do: Callable[[], T],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> T:
        if _retrying.get():
            return do()
        token = _retrying.set(True)
        try:
            return super().call_with_retry(do, fail, is_retryable or retryable, with_failure_count)
        finally:
            _retrying.reset(token)


class _AsyncRetry(redis.asyncio.retry.Retry):
    """The asyncio twin of :class:`_Retry`."""

    async def call_with_retry(
        self,
        do: Callable[[], Awaitable[T]],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> T:
        if _retrying.get():
            return await do()
        token = _retrying.set(True)
        try:
            return await super().call_with_retry(
                do, fail, is_retryable or retryable, with_failure_count
            )
        finally:
            _retrying.reset(token)


def _role(reply: Any) -> str:
    """The role named by a ROLE reply (``master``, ``slave`` or ``sentinel``)."""
    first = reply[0] if isinstance(reply, (list, tuple)) and reply else reply
    return first.decode() if isinstance(first, bytes) else str(first)


def _not_master(address: tuple[str, int], role: str) -> redis.ConnectionError:
    return redis.ConnectionError(
        f"Redis at {address[0]}:{address[1]} answers as {role}, not master: the sentinels "
        "are failing over; reconnecting to the master they name"
    )


class SentinelMasterConnection(redis.sentinel.SentinelManagedConnection):
    """A connection to the master the sentinels name *now*, checked with ROLE.

    redis-py's own class asks the sentinels only in ``connect()``; a connection dropped
    while in use reconnects through ``send_packed_command``, straight to the address it
    had, so after a failover it retries the old master's port until that server comes
    back, empty and saying role:master until the sentinels demote it: workers then ran
    jobs twice and recreated consumer groups on it. Every (re)connect here asks the
    sentinels for the address and refuses a server that is not a master; the cost is one
    sentinel query and one ROLE per connect, never per command.
    """

    def _connect_retry(self) -> None:
        # redis-py resolves here and again below: once is enough
        self.connect_check_health(check_health=self.connection_pool.check_connection)

    def connect_check_health(
        self, check_health: bool = True, retry_socket_connect: bool = True
    ) -> None:
        if self._sock:
            return
        address = self.connection_pool.get_master_address()
        self.host, self.port = address
        # one attempt: the caller's retry asks the sentinels again before the next
        super().connect_check_health(check_health=check_health, retry_socket_connect=False)
        self.send_command("ROLE", check_health=False)
        role = _role(self.read_response())
        if role != "master":
            self.disconnect()
            raise _not_master(address, role)


class AsyncSentinelMasterConnection(redis.asyncio.sentinel.SentinelManagedConnection):
    """The asyncio twin of :class:`SentinelMasterConnection`."""

    async def _connect_retry(self) -> None:
        await self.connect_check_health(check_health=self.connection_pool.check_connection)

    async def connect_check_health(
        self, check_health: bool = True, retry_socket_connect: bool = True
    ) -> None:
        if self.is_connected:
            return
        address = await self.connection_pool.get_master_address()
        self.host, self.port = address
        await super().connect_check_health(check_health=check_health, retry_socket_connect=False)
        await self.send_command("ROLE", check_health=False)
        role = _role(await self.read_response())
        if role != "master":
            await self.disconnect()
            raise _not_master(address, role)


def configured_url(url: str | None = None) -> str:
    """The URL given, else CONVEYOR_REDIS_URL, else REDIS_URL, else localhost."""
    return url or os.environ.get("CONVEYOR_REDIS_URL") or os.environ.get("REDIS_URL") or DEFAULT_URL


@dataclass(frozen=True)
class ClientOptions:
    """Socket and reconnect settings shared by every client Conveyor opens.

    ``socket_timeout`` must exceed the longest blocking read (a worker's XREADGROUP BLOCK),
    and reconnects back off exponentially with full jitter so a fleet does not stampede a
    Redis that just came back. Refused credentials are never retried. Calls that must not
    be sent twice (``Call.retry_safe=False``) bypass this retry once connected: see
    ``Broker``.
    """

    socket_timeout: float = 30.0
    connect_timeout: float = 5.0
    retries: int = 6
    backoff_base: float = 0.25
    backoff_cap: float = 2.0
    health_check_interval: int = 15
    #: one connection per client, kept for its life: a blocking read and the CLIENT ID that
    #: CLIENT UNBLOCK needs must be on the same connection (a client option, not a
    #: connection option: the Sentinel pool passes connection options to the socket class)
    single_connection: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def kwargs(self, *, for_asyncio: bool = False) -> dict[str, Any]:
        backoff = ExponentialWithJitterBackoff(base=self.backoff_base, cap=self.backoff_cap)
        retry: Any = (
            _AsyncRetry(backoff, self.retries) if for_asyncio else _Retry(backoff, self.retries)
        )
        return {
            "socket_timeout": self.socket_timeout,
            "socket_connect_timeout": self.connect_timeout,
            "socket_keepalive": True,
            "health_check_interval": self.health_check_interval,
            "decode_responses": False,
            "retry": retry,
            "retry_on_error": [redis.ConnectionError, redis.TimeoutError],
            **self.extra,
        }


@dataclass(frozen=True)
class SentinelTarget:
    hosts: list[tuple[str, int]]
    service: str
    db: int
    username: str | None
    password: str | None


def parse_sentinel_url(url: str) -> SentinelTarget:
    parts = urlsplit(url)
    netloc = parts.netloc
    username = password = None
    if "@" in netloc:
        creds, netloc = netloc.rsplit("@", 1)
        user, _, pw = creds.partition(":")
        username, password = unquote(user) or None, unquote(pw) or None
    hosts = []
    for hostport in netloc.split(","):
        host, _, port = hostport.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigurationError(f"sentinel URL needs host:port entries, got {hostport!r}")
        hosts.append((host, int(port)))
    path = [p for p in parts.path.split("/") if p]
    if not path:
        raise ConfigurationError("sentinel URL needs a service name: redis+sentinel://h:p/mymaster")
    db = int(path[1]) if len(path) > 1 else int(parse_qs(parts.query).get("db", ["0"])[0])
    return SentinelTarget(hosts, path[0], db, username, password)


CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
SCHEMES = ("redis", "rediss", "unix", "redis+sentinel", *CLUSTER_SCHEMES)


@dataclass(frozen=True)
class ClusterTarget:
    seeds: list[tuple[str, int]]
    username: str | None
    password: str | None
    tls: bool


def parse_cluster_url(url: str) -> ClusterTarget:
    """Seed nodes of a cluster URL; any one that answers is enough to learn the rest."""
    parts = urlsplit(url)
    netloc = parts.netloc
    username = password = None
    if "@" in netloc:
        creds, netloc = netloc.rsplit("@", 1)
        user, _, pw = creds.partition(":")
        username, password = unquote(user) or None, unquote(pw) or None
    seeds = []
    for hostport in netloc.split(","):
        host, _, port = hostport.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigurationError(
                f"cluster URL needs host:port seed nodes, got {hostport!r}: "
                "redis+cluster://host:6379[,host:6380...]"
            )
        seeds.append((host, int(port)))
    path = [p for p in parts.path.split("/") if p]
    if path and path != ["0"]:
        raise ConfigurationError(
            f"Redis Cluster has only database 0, not /{'/'.join(path)}: drop it from the URL"
        )
    return ClusterTarget(seeds, username, password, parts.scheme == "rediss+cluster")


def node_url(url: str, host: str, port: int) -> str:
    """A plain URL for one node of the cluster at ``url``, with its credentials and TLS."""
    target = parse_cluster_url(url)
    creds = ""
    if target.username or target.password:
        creds = f"{quote(target.username or '')}:{quote(target.password or '')}@"
    return f"{'rediss' if target.tls else 'redis'}://{creds}{host}:{port}/0"


def is_cluster(url: str) -> bool:
    return urlsplit(url).scheme in CLUSTER_SCHEMES


def _check_scheme(url: str) -> str:
    scheme = urlsplit(url).scheme
    if scheme not in SCHEMES:
        raise ConfigurationError(
            f"unsupported Redis URL scheme {scheme!r} in {url!r}: use redis://, rediss://, "
            "unix://, redis+sentinel:// or redis+cluster://"
        )
    return scheme


def _cluster_kwargs(url: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    target = parse_cluster_url(url)
    out = {k: v for k, v in kwargs.items() if k != "retry_on_error"}
    out.update(username=target.username, password=target.password)
    if target.tls:
        out["ssl"] = True
    return out


def connect_sync(url: str, options: ClientOptions | None = None) -> Any:
    """A ``redis.Redis``, or a ``redis.cluster.RedisCluster`` for a cluster URL."""
    options = options or ClientOptions()
    kwargs = client_kwargs(options.kwargs())
    scheme = _check_scheme(url)
    if scheme in CLUSTER_SCHEMES:
        seeds = [redis.cluster.ClusterNode(h, p) for h, p in parse_cluster_url(url).seeds]
        return redis.cluster.RedisCluster(startup_nodes=seeds, **_cluster_kwargs(url, kwargs))
    if scheme == "redis+sentinel":
        target = parse_sentinel_url(url)
        sentinel = redis.sentinel.Sentinel(
            target.hosts, sentinel_kwargs={"socket_timeout": kwargs["socket_connect_timeout"]}
        )
        client = sentinel.master_for(
            target.service,
            db=target.db,
            username=target.username,
            password=target.password,
            connection_class=SentinelMasterConnection,
            **kwargs,
        )
        if options.single_connection:
            return redis.Redis(
                connection_pool=client.connection_pool, single_connection_client=True
            )
        return client
    return redis.Redis.from_url(url, single_connection_client=options.single_connection, **kwargs)


def connect_async(url: str, options: ClientOptions | None = None) -> Any:
    """A ``redis.asyncio.Redis``, or its ``RedisCluster`` for a cluster URL."""
    options = options or ClientOptions()
    kwargs = options.kwargs(for_asyncio=True)
    scheme = _check_scheme(url)
    if scheme in CLUSTER_SCHEMES:
        seeds = [redis.asyncio.cluster.ClusterNode(h, p) for h, p in parse_cluster_url(url).seeds]
        return redis.asyncio.cluster.RedisCluster(
            startup_nodes=seeds, **_cluster_kwargs(url, kwargs)
        )
    if scheme == "redis+sentinel":
        target = parse_sentinel_url(url)
        sentinel = redis.asyncio.sentinel.Sentinel(
            target.hosts, sentinel_kwargs={"socket_timeout": kwargs["socket_connect_timeout"]}
        )
        client: redis.asyncio.Redis = sentinel.master_for(
            target.service,
            db=target.db,
            username=target.username,
            password=target.password,
            connection_class=AsyncSentinelMasterConnection,
            **kwargs,
        )
        if options.single_connection:
            client = redis.asyncio.Redis(
                connection_pool=client.connection_pool, single_connection_client=True
            )
    else:
        client = redis.asyncio.Redis.from_url(
            url, single_connection_client=options.single_connection, **kwargs
        )
    pool = client.connection_pool
    if fits(kwargs):
        pool.connection_class = packing_with_hiredis(pool.connection_class)
    return client
