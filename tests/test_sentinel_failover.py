"""After a Sentinel failover, every reconnect goes to the master the sentinels name now.

redis-py's Sentinel connection asks the sentinels only in ``connect()``; a connection that
drops while in use reconnects from ``send_packed_command`` straight to the address it had.
A worker's blocking fetch connection (a single-connection client) was so pinned to the old
master for good: with it left down, every call failed; with it restarted empty (no
persistence), calls reached that empty server while it still said role:master, and the
scale run counted hundreds of duplicate runs and a recreated consumer group. Each test
runs a Sentinel group of its own (the master is killed) on loopback.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from conveyor.broker.connection import ClientOptions, connect_async, connect_sync
from tests.redis_cluster import SentinelGroup

pytestmark = pytest.mark.timeout(120)

OPTIONS = ClientOptions(single_connection=True, retries=8, backoff_cap=1.0)


@pytest.fixture
def group() -> Iterator[SentinelGroup]:
    with SentinelGroup() as g:
        yield g


def _replicated(g: SentinelGroup, key: str) -> None:
    """Write ``key`` on the master and wait until the replica has it."""
    master = connect_sync(g.url)
    master.set(key, b"before")
    assert master.execute_command("WAIT", 1, 5000) == 1
    master.close()


def _port(client: Any) -> int:
    return int(client.connection.port)


def test_a_pinned_connection_follows_the_failover_when_the_old_master_stays_down(
    group: SentinelGroup,
) -> None:
    _replicated(group, "k")
    old = group.master_port()
    client = connect_sync(group.url, OPTIONS)
    assert client.get("k") == b"before" and _port(client) == old

    group.kill_master()
    group.wait_promoted(old)
    new = group.master_port()

    # the dropped connection reconnects: to the new master, not the dead port
    assert client.get("k") == b"before"
    assert _port(client) == new != old
    client.close()


def test_a_pinned_connection_never_reaches_the_restarted_empty_master(
    group: SentinelGroup,
) -> None:
    _replicated(group, "k")
    old = group.master_port()
    sync_client = connect_sync(group.url, OPTIONS)
    async_client = connect_async(group.url, OPTIONS)

    async def get() -> Any:
        return await async_client.get("k")

    loop = asyncio.new_event_loop()
    try:
        assert sync_client.get("k") == b"before"
        assert loop.run_until_complete(get()) == b"before"

        killed = group.kill_master()
        group.wait_promoted(old)
        new = group.master_port()
        killed.start()  # empty, and role:master until the sentinels demote it
        assert group.role_of(old) == "master"

        # both reconnect now, while the old port is an empty master
        assert sync_client.get("k") == b"before"
        assert _port(sync_client) == new
        assert loop.run_until_complete(get()) == b"before"
        assert int(async_client.connection.port) == new
        loop.run_until_complete(async_client.aclose())
    finally:
        loop.close()
        sync_client.close()


def test_a_server_the_sentinels_still_name_but_that_is_a_replica_is_refused(
    group: SentinelGroup,
) -> None:
    """A sentinel's answer can be a moment old: the server it names may already be a
    replica (demoted, or resyncing empty). Reads there would succeed on stale data, so a
    connect checks ROLE and refuses it, naming what happens next."""
    old = group.master_port()
    new = next(s.port for s in group.servers if s.port != old)
    # swap the roles behind the sentinels' back: they still name ``old`` for a while
    replica, master = (
        connect_sync(f"redis://127.0.0.1:{new}/0"),
        connect_sync(f"redis://127.0.0.1:{old}/0"),
    )
    replica.execute_command("REPLICAOF", "NO", "ONE")
    master.execute_command("REPLICAOF", "127.0.0.1", new)
    assert group.master_port() == old and group.role_of(old) == "slave"

    # a single-connection client connects when made
    with pytest.raises(redis.ConnectionError, match="answers as slave, not master"):
        connect_sync(group.url, ClientOptions(single_connection=True, retries=0)).ping()
    replica.close()
    master.close()
