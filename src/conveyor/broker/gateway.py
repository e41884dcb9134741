"""The Broker: the one object that sends Calls to Redis, with a sync and an asyncio face.

Scripts are called by SHA and loaded on NOSCRIPT (a restarted or failed-over Redis has an
empty script cache). Redis errors become Conveyor errors that name the URL and the fix.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

import redis
import redis.asyncio
from redis.exceptions import NoScriptError, OutOfMemoryError

from ..errors import ConnectionFailed, EnqueueRejected
from .calls import Call
from .connection import ClientOptions, configured_url, connect_async, connect_sync
from .server import ServerInfo, check, parse_info

T = TypeVar("T")

OOM_MESSAGE = (
    "Redis at {url} is at its maxmemory limit and refused the write; workers keep draining "
    "the backlog. Raise maxmemory, add workers, or retry later."
)


class Broker:
    def __init__(self, url: str | None = None, options: ClientOptions | None = None) -> None:
        self.url = configured_url(url)
        self.options = options or ClientOptions()
        self._client: redis.Redis | None = None
        self._aclients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, redis.asyncio.Redis]
        self._aclients = weakref.WeakKeyDictionary()
        self._info: ServerInfo | None = None

    # -- sync face -------------------------------------------------------------------------
    @property
    def client(self) -> redis.Redis:
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
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise ConnectionFailed(self.url, exc) from exc
        except OutOfMemoryError as exc:
            raise EnqueueRejected(OOM_MESSAGE.format(url=self.url)) from exc

    def call(self, c: Call[T]) -> T:
        with self._translated():
            flagged = self._flagged() if c.script else False
            command = _command(c, flagged)
            try:
                reply = self.client.execute_command(*command)
            except NoScriptError:
                assert c.script is not None
                self.client.execute_command("SCRIPT", "LOAD", c.script.variant(flagged)[1])
                reply = self.client.execute_command(*command)
            except OutOfMemoryError:
                raise
            except redis.ResponseError as exc:
                if not c.accepts_errors:
                    raise
                reply = exc
        return c.parse(reply)

    def call_many(self, calls: Sequence[Call[Any]]) -> list[Any]:
        """Run calls in one pipeline (no MULTI): one round trip, each call atomic on its own."""
        with self._translated():
            flagged = self._flagged() if any(c.script for c in calls) else False
            replies = self._pipeline(calls, flagged)
            retry = _missing_scripts(replies)
            if retry:
                for script in {calls[i].script for i in retry}:
                    assert script is not None
                    self.client.execute_command("SCRIPT", "LOAD", script.variant(flagged)[1])
                again = self._pipeline([calls[i] for i in retry], flagged)
                for i, r in zip(retry, again, strict=True):
                    replies[i] = r
        return _parse_all(calls, replies, self.url)

    def _pipeline(self, calls: Sequence[Call[Any]], flagged: bool) -> list[Any]:
        pipe = self.client.pipeline(transaction=False)
        for c in calls:
            pipe.execute_command(*_command(c, flagged))
        return list(pipe.execute(raise_on_error=False))

    def server_info(self) -> ServerInfo:
        """Connect, read INFO, refuse unsupported servers and warn about risky settings."""
        if self._info is None:
            with self._translated():
                raw = self.client.info()
            self._info = parse_info(raw)
            check(self._info, self.url)
        return self._info

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # -- asyncio face ----------------------------------------------------------------------
    @property
    def aclient(self) -> redis.asyncio.Redis:
        """The asyncio client of the running loop (redis-py's are bound to their loop)."""
        loop = asyncio.get_running_loop()
        client = self._aclients.get(loop)
        if client is None:
            client = connect_async(self.url, self.options)
            self._aclients[loop] = client
        return client

    async def _aflagged(self) -> bool:
        return (await self.aserver_info()).version >= (7, 0, 0)

    async def acall(self, c: Call[T]) -> T:
        client = self.aclient
        with self._translated():
            flagged = await self._aflagged() if c.script else False
            command = _command(c, flagged)
            try:
                reply = await client.execute_command(*command)
            except NoScriptError:
                assert c.script is not None
                await client.execute_command("SCRIPT", "LOAD", c.script.variant(flagged)[1])
                reply = await client.execute_command(*command)
            except OutOfMemoryError:
                raise
            except redis.ResponseError as exc:
                if not c.accepts_errors:
                    raise
                reply = exc
        return c.parse(reply)

    async def acall_many(self, calls: Sequence[Call[Any]]) -> list[Any]:
        client = self.aclient
        with self._translated():
            flagged = await self._aflagged() if any(c.script for c in calls) else False
            replies = await self._apipeline(client, calls, flagged)
            retry = _missing_scripts(replies)
            if retry:
                for script in {calls[i].script for i in retry}:
                    assert script is not None
                    await client.execute_command("SCRIPT", "LOAD", script.variant(flagged)[1])
                again = await self._apipeline(client, [calls[i] for i in retry], flagged)
                for i, r in zip(retry, again, strict=True):
                    replies[i] = r
        return _parse_all(calls, replies, self.url)

    @staticmethod
    async def _apipeline(
        client: redis.asyncio.Redis, calls: Sequence[Call[Any]], flagged: bool
    ) -> list[Any]:
        pipe = client.pipeline(transaction=False)
        for c in calls:
            pipe.execute_command(*_command(c, flagged))
        return list(await pipe.execute(raise_on_error=False))

    async def aserver_info(self) -> ServerInfo:
        if self._info is None:
            with self._translated():
                raw = await self.aclient.info()
            self._info = parse_info(raw)
            check(self._info, self.url)
        return self._info

    async def aclose(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        client = self._aclients.pop(loop, None)
        if client is not None:
            await client.aclose()


def _command(c: Call[Any], flagged: bool) -> tuple[Any, ...]:
    """The command to send; a script call gets the SHA of the variant this server runs."""
    if c.script is None:
        return c.command
    return ("EVALSHA", c.script.variant(flagged)[0], *c.command[2:])


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
