"""Clients built from URLs: commands packed by hiredis reach Redis byte for byte."""

from __future__ import annotations

import pytest
import redis
import redis.asyncio

from conveyor.broker.connection import ClientOptions, connect_async, connect_sync
from conveyor.broker.packing import PACKER, packing_with_hiredis

VALUES = [
    "text",
    "é ü 中",
    b"\x00\xffraw",
    42,
    -7,
    2.5,
    memoryview(b"view"),
    memoryview(b"sxtxrxixdxexd")[::2],  # hiredis alone would send the raw buffer
    bytearray(b"ba"),
    "",
]
STORED = [
    b"text",
    "é ü 中".encode(),
    b"\x00\xffraw",
    b"42",
    b"-7",
    b"2.5",
    b"view",
    b"strided",
    b"ba",
    b"",
]


def test_sync_clients_pack_with_hiredis_and_every_argument_type_round_trips(
    redis_url: str, r: redis.Redis, namespace: str
) -> None:
    client = connect_sync(redis_url)
    assert client.connection_pool.connection_kwargs["command_packer"] is PACKER
    key = f"{namespace}:packed"
    try:
        client.execute_command("RPUSH", key, *VALUES)
        assert r.lrange(key, 0, -1) == STORED
        assert client.execute_command("CLIENT ID") == client.client_id()
        assert client.execute_command(b"CLIENT ID") == client.client_id()
        with pytest.raises(redis.DataError):
            client.execute_command("SET", key, True)
        with pytest.raises(redis.DataError):
            client.execute_command("SET", key, None)
    finally:
        r.delete(key)
        client.close()


async def test_async_clients_pack_with_hiredis_and_every_argument_type_round_trips(
    redis_url: str, r: redis.Redis, namespace: str
) -> None:
    client = connect_async(redis_url)
    assert client.connection_pool.connection_class.__name__.startswith("Hiredis")
    key = f"{namespace}:packed"
    try:
        await client.execute_command("RPUSH", key, *VALUES)
        assert r.lrange(key, 0, -1) == STORED
        for bad in (True, None):
            with pytest.raises(redis.DataError):
                await client.execute_command("SET", key, bad)
        # redis-py sends some commands as one "NAME SUB" string; they must still be split.
        assert await client.execute_command("CLIENT ID") == await client.client_id()
        pipe = client.pipeline(transaction=False)
        pipe.execute_command("LLEN", key).execute_command("LINDEX", key, 1)
        assert await pipe.execute() == [len(VALUES), "é ü 中".encode()]
    finally:
        r.delete(key)
        await client.aclose()


def test_each_connection_class_gets_one_packing_subclass() -> None:
    plain = redis.asyncio.Connection
    unix = redis.asyncio.UnixDomainSocketConnection
    assert packing_with_hiredis(plain) is packing_with_hiredis(plain)
    assert issubclass(packing_with_hiredis(unix), unix)
    assert packing_with_hiredis(unix) is not packing_with_hiredis(plain)


async def test_a_custom_encoding_keeps_redis_pys_own_packing(
    redis_url: str, r: redis.Redis, namespace: str
) -> None:
    """redis-py's asyncio packer honours ``encoding`` (its sync one, hiredis, sends UTF-8)."""
    options = ClientOptions(extra={"encoding": "latin-1"})
    sync = connect_sync(redis_url, options)
    aio = connect_async(redis_url, options)
    key = f"{namespace}:latin"
    try:
        assert "command_packer" not in sync.connection_pool.connection_kwargs
        assert not aio.connection_pool.connection_class.__name__.startswith("Hiredis")
        await aio.set(key, "ü")
        assert r.get(key) == "ü".encode("latin-1")
    finally:
        r.delete(key)
        sync.close()
        await aio.aclose()


# -- topology: one factory chooses the client ------------------------------------------------
def test_cluster_urls_parse_seeds_credentials_and_tls() -> None:
    from conveyor.broker.connection import node_url, parse_cluster_url

    t = parse_cluster_url("rediss+cluster://u%40x:p%3Aw@10.0.0.1:7000,10.0.0.2:7001")
    assert t.seeds == [("10.0.0.1", 7000), ("10.0.0.2", 7001)]
    assert (t.username, t.password, t.tls) == ("u@x", "p:w", True)
    url = node_url("rediss+cluster://u%40x:p%3Aw@10.0.0.1:7000", "10.0.0.3", 7002)
    assert url == "rediss://u%40x:p%3Aw@10.0.0.3:7002/0"
    assert not parse_cluster_url("redis+cluster://h:1/0").tls


@pytest.mark.parametrize(
    "url", ["redis+cluster://h", "redis+cluster://h:1/3", "redis+cluster://:1"]
)
def test_bad_cluster_urls_are_refused_with_the_fix(url: str) -> None:
    from conveyor.broker.connection import parse_cluster_url
    from conveyor.errors import ConfigurationError

    with pytest.raises(ConfigurationError) as err:
        parse_cluster_url(url)
    assert "\n" not in str(err.value)


def test_cluster_urls_make_cluster_clients_and_others_do_not(redis_url: str) -> None:
    """The factory picks the topology once; with a single connection asked for, a plain or
    Sentinel client is a single-connection client (never a socket option)."""
    import redis.cluster

    from conveyor.broker.connection import is_cluster

    assert is_cluster("redis+cluster://h:1") and is_cluster("rediss+cluster://h:1")
    assert not is_cluster(redis_url)
    single = connect_sync(redis_url, ClientOptions(single_connection=True))
    assert single.connection is not None and single.ping()
    single.close()
    assert not isinstance(connect_sync(redis_url), redis.cluster.RedisCluster)


def test_single_connection_through_sentinel_is_a_client_option_not_a_socket_one() -> None:
    """The reported crash: ``single_connection_client`` reached the Sentinel connection
    class. Made here without any Redis (no connection is opened until a command)."""
    client = connect_async(
        "redis+sentinel://127.0.0.1:1/svc/0", ClientOptions(single_connection=True)
    )
    assert client.single_connection_client
    assert "single_connection_client" not in client.connection_pool.connection_kwargs
