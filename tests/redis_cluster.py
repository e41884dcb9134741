"""A real Redis Cluster and a real Sentinel group for the tests (not shipped in the package).

``Cluster`` is 3 masters and 3 replicas of ``redis-server --cluster-enabled yes`` on free
loopback ports, joined by ``redis-cli --cluster create``; ``SentinelGroup`` is one master,
one replica and three ``redis-server --sentinel``. Both are started for real (no mocks) so
that failover is Redis' own: ``kill_master()`` SIGKILLs a master and ``wait_promoted()``
waits until its replica has taken over. The session fixtures live in tests/conftest_scale.py.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

from conveyor.embedded import LOOPBACK
from tests.redis_servers import RedisServer

NODE_TIMEOUT_MS = 2000


def _wait(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(redis.RedisError, OSError):
            if check():
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


def _client(port: int) -> redis.Redis:
    return redis.Redis(LOOPBACK, port, socket_timeout=2.0, socket_connect_timeout=1.0)


def _redis_cli() -> str:
    found = shutil.which("redis-cli")
    if found is None:
        raise RuntimeError("redis-cli is not on PATH: install redis-tools (Redis 7+)")
    return found


@dataclass
class Shard:
    master: RedisServer
    replica: RedisServer


def distinct_free_ports(count: int) -> list[int]:
    """``count`` different loopback ports free now: each is bound until all are chosen."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in socks:
            sock.bind((LOOPBACK, 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


class Cluster:
    """3 masters + 3 replicas on loopback, in one temp dir, stopped by ``stop()``."""

    def __init__(self, masters: int = 3, *, extra_args: tuple[str, ...] = ()) -> None:
        self.base = tempfile.mkdtemp(prefix="conveyor-cluster-")
        self.nodes: list[RedisServer] = []
        # Every port (a node's and its bus port) held at once while they are chosen: two
        # free_port() calls in a row may return the same port, since none is bound until the
        # servers start (a node once failed with "Address already in use" on its own port).
        ports = distinct_free_ports(masters * 4)
        for i in range(masters * 2):
            port, bus = ports[2 * i], ports[2 * i + 1]
            node_dir = os.path.join(self.base, f"node-{i}")
            os.makedirs(node_dir)
            args = [
                *("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"),
                *("--cluster-node-timeout", str(NODE_TIMEOUT_MS)),
                # the bus port defaults to port + 10000, impossible above 55535
                *("--cluster-port", str(bus)),
                *("--cluster-replica-validity-factor", "0"),
                *extra_args,
            ]
            self.nodes.append(RedisServer(port, extra_args=args, dir=node_dir))

    @property
    def url(self) -> str:
        """A cluster URL naming every node as a seed (any one of them is enough)."""
        return "redis+cluster://" + ",".join(f"{LOOPBACK}:{n.port}" for n in self.nodes[:3])

    def start(self) -> Cluster:
        for node in self.nodes:
            node.start()
        hosts = [f"{LOOPBACK}:{n.port}" for n in self.nodes]
        subprocess.run(
            [
                _redis_cli(),
                "--cluster",
                "create",
                *hosts,
                "--cluster-replicas",
                "1",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        self.wait_ok()
        self.wait_replicas_synced()
        return self

    def wait_replicas_synced(self, timeout: float = 30.0) -> None:
        """Every live replica has finished its sync (a fresh replica confirms no WAIT)."""

        def synced() -> bool:
            replicas = [n for n in self.live() if self.role(n) == "slave"]
            return len(replicas) == len(self.live()) - len(self.nodes) // 2 and all(
                _client(n.port).info("replication")["master_link_status"] == "up" for n in replicas
            )

        _wait(synced, timeout, "every replica to finish its sync")

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Every live node says cluster_state:ok and agrees on 3 masters with slots."""

        def ok() -> bool:
            for node in self.live():
                info = _client(node.port).execute_command("CLUSTER", "INFO")
                text = info.decode() if isinstance(info, bytes) else str(info)
                if "cluster_state:ok" not in text:
                    return False
            return len(self.masters()) == len(self.nodes) // 2

        _wait(ok, timeout, "cluster_state:ok on every node")

    def live(self) -> list[RedisServer]:
        return [n for n in self.nodes if n.pid is not None]

    def role(self, node: RedisServer) -> str:
        info = _client(node.port).info("replication")
        return str(info["role"])

    def masters(self) -> list[RedisServer]:
        """Live nodes that are masters owning slots."""
        out = []
        for node in self.live():
            with contextlib.suppress(redis.RedisError, OSError):
                if self.role(node) == "master" and _owns_slots(node.port):
                    out.append(node)
        return out

    def master_of(self, key: str) -> RedisServer:
        slot = int(_client(self.live()[0].port).execute_command("CLUSTER", "KEYSLOT", key))
        for node in self.masters():
            for start, end, *_ in _client(node.port).execute_command("CLUSTER", "SLOTS"):
                if start <= slot <= end:
                    port = int(_[0][1])
                    return next(n for n in self.nodes if n.port == port)
        raise RuntimeError(f"no master owns the slot of {key!r}")

    def kill_master(self, node: RedisServer | None = None) -> RedisServer:
        """SIGKILL a master (the first one, unless named); returns the killed node."""
        target = node or self.masters()[0]
        target.kill()
        return target

    def wait_promoted(self, killed: RedisServer, timeout: float = 30.0) -> float:
        """Wait until a replica took over the killed master's slots; returns seconds waited."""
        t0 = time.monotonic()

        def promoted() -> bool:
            if len(self.masters()) < len(self.nodes) // 2:
                return False
            for node in self.live():
                info = _client(node.port).execute_command("CLUSTER", "INFO")
                if b"cluster_state:ok" not in info:
                    return False
            return True

        _wait(promoted, timeout, f"a replica to replace the master on port {killed.port}")
        return time.monotonic() - t0

    def restart(self, node: RedisServer) -> None:
        """Bring a killed node back (it rejoins as a replica of its replacement)."""
        node.start()

    def stop(self) -> None:
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.terminate(grace=2.0)
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _owns_slots(port: int) -> bool:
    me = _client(port).execute_command("CLUSTER", "MYID")
    me = me.decode() if isinstance(me, bytes) else me
    for _start, _end, primary, *_ in _client(port).execute_command("CLUSTER", "SLOTS"):
        node_id = primary[2].decode() if isinstance(primary[2], bytes) else primary[2]
        if node_id == me:
            return True
    return False


class Sentinel(RedisServer):
    """``redis-server <conf> --sentinel``: the config file must come first, and is rewritten
    by the sentinel itself, so it lives in the sentinel's own directory."""

    def __init__(self, master_port: int, service: str, dir: str) -> None:
        super().__init__(dir=dir)
        self.conf = os.path.join(dir, "sentinel.conf")
        with open(self.conf, "w") as f:
            f.write(
                f"port {self.port}\nbind {LOOPBACK}\ndir {dir}\n"
                f"sentinel monitor {service} {LOOPBACK} {master_port} 2\n"
                f"sentinel down-after-milliseconds {service} 1000\n"
                f"sentinel failover-timeout {service} 5000\n"
                f"sentinel parallel-syncs {service} 1\n"
            )

    def command(self, binary: str) -> list[str]:
        return [binary, self.conf, "--sentinel", "--logfile", self.logfile]


class SentinelGroup:
    """One master, one replica, three sentinels watching ``service``."""

    def __init__(self, service: str = "conveyor-test") -> None:
        self.service = service
        self.base = tempfile.mkdtemp(prefix="conveyor-sentinel-")
        self.servers: list[RedisServer] = []
        self.sentinels: list[Sentinel] = []

    def _dir(self, name: str) -> str:
        path = os.path.join(self.base, name)
        os.makedirs(path, exist_ok=True)
        return path

    @property
    def url(self) -> str:
        hosts = ",".join(f"{LOOPBACK}:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.service}/0"

    def start(self) -> SentinelGroup:
        master = RedisServer(dir=self._dir("master")).start()
        replica = RedisServer(
            extra_args=["--replicaof", LOOPBACK, str(master.port)], dir=self._dir("replica")
        ).start()
        self.servers = [master, replica]  # type: ignore[list-item]
        _wait(
            lambda: _client(replica.port).info("replication")["master_link_status"] == "up",
            20,
            "the replica to sync",
        )
        for i in range(3):
            self.sentinels.append(Sentinel(master.port, self.service, self._dir(f"s{i}")))
        for s in self.sentinels:
            s.start()
        _wait(self._sentinels_agree, 20, "the sentinels to see the master and its replica")
        return self

    def _sentinels_agree(self) -> bool:
        for s in self.sentinels:
            info = _client(s.port).sentinel_master(self.service)
            if int(info["num-slaves"]) < 1 or int(info["num-other-sentinels"]) < 2:
                return False
        return True

    def master_port(self) -> int:
        return self._master_port_of(next(s for s in self.sentinels if s.pid is not None))

    def _master_port_of(self, sentinel: Sentinel) -> int:
        _host, port = _client(sentinel.port).execute_command(
            "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service
        )
        return int(port)

    def master(self) -> RedisServer:
        port = self.master_port()
        return next(n for n in self.servers if n.port == port)

    def kill_master(self) -> RedisServer:
        target = self.master()
        target.kill()
        return target

    def failover(self) -> None:
        """A planned failover (SENTINEL FAILOVER): the replica is promoted, nothing killed."""
        _client(self.sentinels[0].port).execute_command("SENTINEL", "FAILOVER", self.service)

    def wait_promoted(self, old_port: int, timeout: float = 30.0) -> float:
        """Wait until every sentinel names the new master and it says it is one; seconds
        waited. (A sentinel that still names the old master sends clients to it as soon as
        it is back, empty when it has no persistence: restart it only after this.)"""
        t0 = time.monotonic()

        old = next(n for n in self.servers if n.port == old_port)

        def promoted() -> bool:
            ports = {self._master_port_of(s) for s in self.sentinels if s.pid is not None}
            if len(ports) != 1:
                return False  # a sentinel still names the old master: not settled yet
            [port] = ports
            if port == old_port or self.role_of(port) != "master":
                return False
            # a planned failover: the old master takes writes (lost later) until demoted
            return old.pid is None or self.role_of(old_port) == "slave"

        _wait(promoted, timeout, f"the sentinels to promote a replica of port {old_port}")
        return time.monotonic() - t0

    def role_of(self, port: int) -> str:
        return str(_client(port).info("replication")["role"])

    def stop(self) -> None:
        for server in [*self.sentinels, *self.servers]:
            with contextlib.suppress(Exception):
                server.terminate(grace=2.0)
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> SentinelGroup:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
