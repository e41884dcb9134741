"""Sending a call exactly once, on a connection that is up (see the gateway's docstring).

redis-py's own retry would resend a command whose reply was only late, and Redis would add
the job twice; so these send on a pooled connection made fit first (``ready``), read the
reply, and turn a timeout or a dropped connection *after* sending into EnqueueUncertain. A
failure to connect is raised as is: nothing was sent, so the caller may try again.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import redis
import redis.asyncio
from redis.exceptions import ResponseError

from ..errors import EnqueueUncertain


def send_once(url: str, client: redis.Redis, command: tuple[Any, ...]) -> Any:
    """Send on a connection that is up, read the reply, never resend."""
    pool = client.connection_pool
    conn = pool.get_connection()
    try:
        ready(conn)
        try:
            conn.send_command(*command, check_health=False)
            return client.parse_response(conn, command[0])
        except ResponseError:
            raise  # a whole reply was read: the connection is in step
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            conn.disconnect()  # a late reply must not be read as the next command's
            raise EnqueueUncertain(url, exc) from exc
        except BaseException:  # cancelled or interrupted while waiting: same socket state
            conn.disconnect()
            raise
    finally:
        pool.release(conn)


@contextlib.contextmanager
def held(client: redis.Redis) -> Iterator[Any]:
    """A pooled connection made fit to send on, kept for several sends and reads. Left with
    an error (a reply may still be unread), it is closed: its next user must not read that
    reply as its own."""
    pool = client.connection_pool
    conn = pool.get_connection()
    try:
        ready(conn)
        yield conn
    except BaseException:
        conn.disconnect()
        raise
    finally:
        pool.release(conn)


def send_pipeline(url: str, conn: Any, commands: list[tuple[Any, ...]]) -> None:
    """Write the commands; a failure part-way may have sent some: EnqueueUncertain."""
    try:
        conn.send_packed_command(conn.pack_commands(commands), check_health=False)
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        conn.disconnect()
        raise EnqueueUncertain(url, exc, batch=True) from exc


def read_pipeline(
    url: str, client: redis.Redis, conn: Any, commands: list[tuple[Any, ...]]
) -> list[Any]:
    """The replies of ``send_pipeline(commands)``, an error reply kept as its exception."""
    replies: list[Any] = []
    try:
        for command in commands:
            try:
                replies.append(client.parse_response(conn, command[0]))
            except ResponseError as exc:
                replies.append(exc)
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        conn.disconnect()  # a late reply must not be read as the next command's
        raise EnqueueUncertain(url, exc, batch=True) from exc
    return replies


def pipeline_once(url: str, client: redis.Redis, commands: list[tuple[Any, ...]]) -> list[Any]:
    with held(client) as conn:
        send_pipeline(url, conn, commands)
        return read_pipeline(url, client, conn, commands)


async def asend_once(url: str, client: redis.asyncio.Redis, command: tuple[Any, ...]) -> Any:
    pool = client.connection_pool
    conn = await pool.get_connection()
    try:
        await aready(conn)
        try:
            await conn.send_command(*command, check_health=False)
            return await client.parse_response(conn, command[0])
        except ResponseError:
            raise
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            await conn.disconnect(nowait=True)
            raise EnqueueUncertain(url, exc) from exc
        except BaseException:  # cancelled or interrupted while waiting: same socket state
            await conn.disconnect(nowait=True)
            raise
    finally:
        await pool.release(conn)


@contextlib.asynccontextmanager
async def aheld(client: redis.asyncio.Redis) -> AsyncIterator[Any]:
    """The asyncio twin of :func:`held`."""
    pool = client.connection_pool
    conn = await pool.get_connection()
    try:
        await aready(conn)
        yield conn
    except BaseException:
        await conn.disconnect(nowait=True)
        raise
    finally:
        await pool.release(conn)


async def asend_pipeline(url: str, conn: Any, commands: list[tuple[Any, ...]]) -> None:
    try:
        await conn.send_packed_command(conn.pack_commands(commands), check_health=False)
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        await conn.disconnect(nowait=True)
        raise EnqueueUncertain(url, exc, batch=True) from exc


async def aread_pipeline(
    url: str, client: redis.asyncio.Redis, conn: Any, commands: list[tuple[Any, ...]]
) -> list[Any]:
    replies: list[Any] = []
    try:
        for command in commands:
            try:
                replies.append(await client.parse_response(conn, command[0]))
            except ResponseError as exc:
                replies.append(exc)
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        await conn.disconnect(nowait=True)
        raise EnqueueUncertain(url, exc, batch=True) from exc
    return replies


async def apipeline_once(
    url: str, client: redis.asyncio.Redis, commands: list[tuple[Any, ...]]
) -> list[Any]:
    async with aheld(client) as conn:
        await asend_pipeline(url, conn, commands)
        return await aread_pipeline(url, client, conn, commands)


def ready(conn: Any) -> None:
    """Make a pooled connection fit to send on: one the server closed while it sat idle
    (timeout, restart, CLIENT KILL) would fail only after sending, making an enqueue look
    uncertain. redis-py's pool skips this check when maintenance notifications are on."""
    try:
        stale = conn.can_read()  # pending bytes or EOF on an idle connection
    except (redis.ConnectionError, OSError):
        stale = True
    if stale:
        conn.disconnect()
        conn.connect()  # retried: nothing was sent yet
    conn.check_health()


async def aready(conn: Any) -> None:
    """The asyncio twin of :func:`ready`."""
    try:
        stale = await conn.can_read()
    except (redis.ConnectionError, OSError):
        stale = True
    if stale:
        await conn.disconnect()
        await conn.connect()
    await conn.check_health()
