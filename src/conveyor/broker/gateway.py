"""The Broker: the one object that sends Calls to Redis, with a sync and an asyncio face.

Scripts are called by SHA and loaded on NOSCRIPT (a restarted or failed-over Redis has an
empty script cache). Redis errors become Conveyor errors that name the URL and the fix.

A call that must not run twice (``Call.retry_safe`` False: a plain enqueue) is sent exactly
once, on a connection that is already up. redis-py's own retry would resend a command whose
reply was only late, and Redis would add the job twice; so a timeout or a dropped connection
after sending raises EnqueueUncertain instead. Failing to connect is retried as usual: nothing
was sent yet.

On Redis Cluster the clients are redis-py's cluster clients, which route every call and
pipeline by slot; a call sent exactly once goes to the owning node's own plain client
(``cluster.py``), and a reply that says the slot moved (nothing ran) is sent again there.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import weakref
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

import redis
import redis.asyncio
from redis.exceptions import (
    AuthenticationError,
    InvalidResponse,
    MovedError,
    NoScriptError,
    OutOfMemoryError,
    RedisClusterException,
    ResponseError,
)

from ..errors import (
    AuthenticationFailed,
    ConfigurationError,
    ConnectionFailed,
    ConveyorError,
    EnqueueRejected,
    redact_url,
)
from ..settings import Durability
from . import cluster, durable, once
from .calls import Call
from .connection import (
    ClientOptions,
    configured_url,
    connect_async,
    connect_sync,
    is_cluster,
)
from .pubsubs import PubSubs
from .routing import Routing
from .server import ServerInfo, check, parse_info

T = TypeVar("T")

OOM_MESSAGE = (
    "Redis at {url} is at its maxmemory limit and refused the write; workers keep draining "
    "the backlog. Raise maxmemory, add workers, or retry later."
)
NOT_REDIS = (
    "Something other than Redis answered there (an HTTP server?): check the host and port "
    "of the URL."
)


class Broker(Routing):
    def __init__(self, url: str | None = None, options: ClientOptions | None = None) -> None:
        self.url = configured_url(url)
        self.options = options or ClientOptions()
        self._client: redis.Redis | None = None
        self._aclients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, redis.asyncio.Redis]
        self._aclients = weakref.WeakKeyDictionary()
        self._info: ServerInfo | None = None
        self.cluster = is_cluster(self.url)
        #: a node that does not answer may have been replaced: re-read the slot map at once
        #: (``_rerouted``) rather than retry that node for seconds
        self.node_options = dataclasses.replace(self.options, retries=0)
        #: plain clients of cluster nodes, for calls sent exactly once (see cluster.py)
        self._nodes: dict[cluster.Address, redis.Redis] = {}
        self._anodes: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[cluster.Address, redis.asyncio.Redis]
        ] = weakref.WeakKeyDictionary()
        #: pub/subs kept between job.result() waits (pubsubs.py)
        self.pubsubs = PubSubs()

    # -- sync face -------------------------------------------------------------------------
    @property
    def client(self) -> Any:
        """``redis.Redis``, or ``redis.cluster.RedisCluster`` for a cluster URL."""
        if self._client is None:
            self._client = connect_sync(self.url, self.options)
        return self._client

    def _flagged(self) -> bool:
        """Whether this server understands script shebangs (Redis 7.0+, Valkey 7.2+)."""
        return self.server_info().version >= (7, 0, 0)

    @contextlib.contextmanager
    def _translated(self) -> Iterator[None]:
        """Redis errors as Conveyor's: the URL and the fix, not a socket error."""
        try:
            yield
        except (redis.RedisError, RedisClusterException) as exc:
            error = translate(self.url, exc)
            if error is None:
                raise
            raise error from exc

    def _load(self, source: str) -> tuple[Any, ...]:
        """SCRIPT LOAD, on every primary of a cluster: the node that said NOSCRIPT may be a
        replica promoted since (a script cache is not replicated)."""
        return ("SCRIPT LOAD", source) if self.cluster else ("SCRIPT", "LOAD", source)

    def call(self, c: Call[T], durability: Durability | None = None) -> T:
        """Run one call; with ``durability``, then wait for replicas (see durable.py)."""
        if durability is not None:
            return self.call_many([c], durability)[0]
        with self._translated():
            flagged = self._flagged() if c.script else False
            command = _command(c, flagged)
            send = self.client.execute_command if c.retry_safe else self._send_once
            try:
                reply = send(*command)
            except NoScriptError:  # a reply: nothing ran, so sending again is safe
                assert c.script is not None
                self.client.execute_command(*self._load(c.script.variant(flagged)[1]))
                reply = send(*command)
            except ResponseError as exc:
                reply = _accepted(c, exc)
        return c.parse(reply)

    def call_many(
        self, calls: Sequence[Call[Any]], durability: Durability | None = None
    ) -> list[Any]:
        """Run calls in one pipeline (no MULTI): one round trip, each call atomic on its own.

        If any call is not retry-safe, the whole pipeline is sent once (see ``call``)."""
        if durability is not None:
            return self._durably(calls, durability)
        with self._translated():
            flagged = self._flagged() if any(c.script for c in calls) else False
            replies = self._pipeline(calls, flagged)
            retry = _missing_scripts(replies)
            if retry:
                for script in {calls[i].script for i in retry}:
                    assert script is not None
                    self.client.execute_command(*self._load(script.variant(flagged)[1]))
                again = self._pipeline([calls[i] for i in retry], flagged)
                for i, r in zip(retry, again, strict=True):
                    replies[i] = r
        return _parse_all(calls, replies, self.url)

    def _durably(self, calls: Sequence[Call[Any]], d: Durability) -> list[Any]:
        """Send once, each node's part followed by WAIT on its connection; check the acks."""
        with self._translated():
            info = self.server_info()
            flagged = info.version >= (7, 0, 0)
            wait = durable.wait_command(d, info, self.url)
            commands = [_command(c, flagged) for c in calls]
            replies, acks = self._with_wait(commands, wait)
            retry = _missing_scripts(replies)
            if retry:
                for script in {calls[i].script for i in retry}:
                    assert script is not None
                    self.client.execute_command(*self._load(script.variant(flagged)[1]))
                again, more = self._with_wait([commands[i] for i in retry], wait)
                for i, r in zip(retry, again, strict=True):
                    replies[i] = r
                acks += more
        parsed = _parse_all(calls, replies, self.url)
        durable.check(d, acks, self.url, parsed)
        return parsed

    def _with_wait(
        self, commands: list[tuple[Any, ...]], wait: tuple[Any, ...]
    ) -> tuple[list[Any], list[Any]]:
        """Replies to ``commands`` and the WAIT reply of each connection they went on."""
        if not self.cluster:
            *got, ack = once.pipeline_once(self.url, self.client, [*commands, wait])
            return got, [ack]
        acks: list[Any] = []
        return self._pipeline_once(commands, (wait, acks)), acks

    def _pipeline(self, calls: Sequence[Call[Any]], flagged: bool) -> list[Any]:
        commands = [_command(c, flagged) for c in calls]
        if not all(c.retry_safe for c in calls):
            return self._pipeline_once(commands)
        pipe = self.client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        return _unbroken(list(pipe.execute(raise_on_error=False)))

    @property
    def sharded_done(self) -> bool:
        """Completions go out by sharded pub/sub (SPUBLISH, Redis 7+ on Cluster): each reaches
        only the shard of its queue, instead of being broadcast to every node."""
        return (
            self.cluster
            and cluster.SCRIPTS_PUBLISH_SHARDED
            and self._info is not None
            and self._info.version >= (7, 0, 0)
        )

    @property
    def publish_command(self) -> str:
        """What the scripts publish completions with (read after server_info())."""
        return "SPUBLISH" if self.sharded_done else "PUBLISH"

    def server_info(self) -> ServerInfo:
        """Connect, read INFO, refuse unsupported servers and warn about risky settings."""
        if self._info is None:
            with self._translated():
                raw = self.client.info()
            self._info = parse_info(raw)
            check(self._info, self.url)
            cluster.check_topology(self._info.mode, self.url, self.cluster)
        return self._info

    def close(self) -> None:
        self.pubsubs.close()
        if self._client is not None:
            self._client.close()
            self._client = None
        for node in self._nodes.values():
            node.close()
        self._nodes.clear()

    # -- asyncio face ----------------------------------------------------------------------
    @property
    def aclient(self) -> Any:
        """The asyncio client of the running loop (redis-py's are bound to their loop):
        ``redis.asyncio.Redis``, or its ``RedisCluster`` for a cluster URL."""
        loop = asyncio.get_running_loop()
        client = self._aclients.get(loop)
        if client is None:
            client = connect_async(self.url, self.options)
            self._aclients[loop] = client
        return client

    async def _aflagged(self) -> bool:
        return (await self.aserver_info()).version >= (7, 0, 0)

    async def acall(self, c: Call[T], durability: Durability | None = None) -> T:
        if durability is not None:
            return (await self.acall_many([c], durability))[0]
        client = self.aclient
        with self._translated():
            flagged = await self._aflagged() if c.script else False
            command = _command(c, flagged)
            send = client.execute_command if c.retry_safe else self._asend_once
            try:
                reply = await send(*command)
            except NoScriptError:
                assert c.script is not None
                await client.execute_command(*self._load(c.script.variant(flagged)[1]))
                reply = await send(*command)
            except ResponseError as exc:
                reply = _accepted(c, exc)
        return c.parse(reply)

    async def acall_many(
        self, calls: Sequence[Call[Any]], durability: Durability | None = None
    ) -> list[Any]:
        if durability is not None:
            return await self._adurably(calls, durability)
        client = self.aclient
        with self._translated():
            flagged = await self._aflagged() if any(c.script for c in calls) else False
            replies = await self._apipeline(client, calls, flagged)
            retry = _missing_scripts(replies)
            if retry:
                for script in {calls[i].script for i in retry}:
                    assert script is not None
                    await client.execute_command(*self._load(script.variant(flagged)[1]))
                again = await self._apipeline(client, [calls[i] for i in retry], flagged)
                for i, r in zip(retry, again, strict=True):
                    replies[i] = r
        return _parse_all(calls, replies, self.url)

    async def _adurably(self, calls: Sequence[Call[Any]], d: Durability) -> list[Any]:
        with self._translated():
            info = await self.aserver_info()
            flagged = info.version >= (7, 0, 0)
            wait = durable.wait_command(d, info, self.url)
            commands = [_command(c, flagged) for c in calls]
            replies, acks = await self._awith_wait(commands, wait)
            retry = _missing_scripts(replies)
            if retry:
                for script in {calls[i].script for i in retry}:
                    assert script is not None
                    await self.aclient.execute_command(*self._load(script.variant(flagged)[1]))
                again, more = await self._awith_wait([commands[i] for i in retry], wait)
                for i, r in zip(retry, again, strict=True):
                    replies[i] = r
                acks += more
        parsed = _parse_all(calls, replies, self.url)
        durable.check(d, acks, self.url, parsed)
        return parsed

    async def _awith_wait(
        self, commands: list[tuple[Any, ...]], wait: tuple[Any, ...]
    ) -> tuple[list[Any], list[Any]]:
        client = self.aclient
        if not self.cluster:
            *got, ack = await once.apipeline_once(self.url, client, [*commands, wait])
            return got, [ack]
        acks: list[Any] = []
        return await self._apipeline_once(client, commands, (wait, acks)), acks

    async def _apipeline(self, client: Any, calls: Sequence[Call[Any]], flagged: bool) -> list[Any]:
        commands = [_command(c, flagged) for c in calls]
        if not all(c.retry_safe for c in calls):
            return await self._apipeline_once(client, commands)
        pipe = client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        return _unbroken(list(await pipe.execute(raise_on_error=False)))

    async def aserver_info(self) -> ServerInfo:
        if self._info is None:
            with self._translated():
                raw = await self.aclient.info()
            self._info = parse_info(raw)
            check(self._info, self.url)
            cluster.check_topology(self._info.mode, self.url, self.cluster)
        return self._info

    async def aclose(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        await self.pubsubs.aclose()
        client = self._aclients.pop(loop, None)
        if client is not None:
            await client.aclose()
        for node in self._anodes.pop(loop, {}).values():
            await node.aclose()


def translate(url: str, exc: redis.RedisError | RedisClusterException) -> ConveyorError | None:
    """The Conveyor error for a Redis error, or None for an error a caller handles itself."""
    text = str(exc)
    topology = cluster.topology_error(url, exc)
    if topology is not None:
        return topology
    if isinstance(exc, AuthenticationError) or text.startswith(("NOAUTH", "WRONGPASS")):
        return AuthenticationFailed(url, exc)
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
        return ConnectionFailed(url, exc)
    if isinstance(exc, InvalidResponse):
        return ConnectionFailed(url, exc, fix=NOT_REDIS)
    if isinstance(exc, OutOfMemoryError):
        return EnqueueRejected(OOM_MESSAGE.format(url=url))
    if "DB index is out of range" in text:
        return ConfigurationError(
            f"Redis at {redact_url(url)} has no database of that number (DB index is out of "
            "range): use a number below its `databases` setting (16 unless configured), "
            "e.g. redis://host:6379/0."
        )
    return None


def _accepted(c: Call[Any], exc: ResponseError) -> ResponseError:
    """An error reply the call parses itself; others (and the memory limit) are raised."""
    if isinstance(exc, OutOfMemoryError) or not c.accepts_errors:
        raise exc
    return exc


def _command(c: Call[Any], flagged: bool) -> tuple[Any, ...]:
    """The command to send; a script call gets the SHA of the variant this server runs."""
    if c.script is None:
        return c.command
    return ("EVALSHA", c.script.variant(flagged)[0], *c.command[2:])


def _unbroken(replies: list[Any]) -> list[Any]:
    """Replies of a retry-safe pipeline, or its first connection-level error raised: a
    cluster pipeline hands back a node's dropped connection or a failover in progress as a
    reply, which must reach callers as ConnectionFailed (they retry), not as a result."""
    for r in replies:
        if isinstance(r, (redis.ConnectionError, redis.TimeoutError, *cluster.REROUTE)):
            raise r
        if isinstance(r, MovedError):
            raise r
    return replies


def _missing_scripts(replies: list[Any]) -> list[int]:
    """Indexes of script calls that hit NOSCRIPT (a restarted or failed-over server)."""
    return [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]


def _parse_all(calls: Sequence[Call[Any]], replies: list[Any], url: str) -> list[Any]:
    """Parsed replies. At the memory limit, EnqueueRejected carries them in call order, with
    None for each call Redis refused."""
    out: list[Any] = []
    refused: OutOfMemoryError | None = None
    for c, r in zip(calls, replies, strict=True):
        if isinstance(r, OutOfMemoryError):
            refused = refused or r
            out.append(None)
            continue
        if isinstance(r, Exception) and not c.accepts_errors:
            raise r
        out.append(c.parse(r))
    if refused is not None:
        raise EnqueueRejected(OOM_MESSAGE.format(url=url), added=out) from refused
    return out
