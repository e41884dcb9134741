"""Clients built from URLs: asyncio commands packed by hiredis reach Redis byte for byte."""

from __future__ import annotations

import redis
import redis.asyncio

from conveyor.broker.connection import connect_async, packing_with_hiredis


async def test_async_clients_pack_with_hiredis_and_every_argument_type_round_trips(
    redis_url: str, r: redis.Redis, namespace: str
) -> None:
    client = connect_async(redis_url)
    assert client.connection_pool.connection_class.__name__.startswith("Hiredis")
    key = f"{namespace}:packed"
    try:
        values = ["text", "é ü 中", b"\x00\xffraw", 42, -7, 2.5, memoryview(b"view"), ""]
        await client.execute_command("RPUSH", key, *values)
        stored = r.lrange(key, 0, -1)
        assert stored == [
            b"text",
            "é ü 中".encode(),
            b"\x00\xffraw",
            b"42",
            b"-7",
            b"2.5",
            b"view",
            b"",
        ]
        # redis-py sends some commands as one "NAME SUB" string; they must still be split.
        assert await client.execute_command("CLIENT ID") == await client.client_id()
        pipe = client.pipeline(transaction=False)
        pipe.execute_command("LLEN", key).execute_command("LINDEX", key, 1)
        assert await pipe.execute() == [len(values), "é ü 中".encode()]
    finally:
        r.delete(key)
        await client.aclose()


def test_each_connection_class_gets_one_packing_subclass() -> None:
    plain = redis.asyncio.Connection
    unix = redis.asyncio.UnixDomainSocketConnection
    assert packing_with_hiredis(plain) is packing_with_hiredis(plain)
    assert issubclass(packing_with_hiredis(unix), unix)
    assert packing_with_hiredis(unix) is not packing_with_hiredis(plain)
