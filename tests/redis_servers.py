"""Redis servers for the tests, the chaos suite and the benchmarks (not shipped in the package).

``RedisServer`` adds what tests need on top of the demo's ``EmbeddedRedis``: persistence
settings, extra options, a kept directory, a SIGKILL that keeps the data for a restart, and a
last-resort cleanup when a test forgets to stop it. ``python -m tests.redis_servers ensure`` is
what ``make test`` runs to find or start the Redis the suite uses.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Iterator, Sequence
from urllib.parse import urlsplit

from conveyor.embedded import (
    FIX_HINT,
    LOOPBACK,
    STDERR_NAME,
    SYSTEM_PORT,
    EmbeddedRedis,
    find_redis_server_binary,
    free_port,
    log_tail,
    ping,
)
from conveyor.errors import redact_url

__all__ = ["RedisServer", "configured_url", "free_port", "ping", "redis_for"]

DEFAULT_URL = "redis://127.0.0.1:6379/0"


def configured_url() -> str:
    """CONVEYOR_REDIS_URL, then REDIS_URL, then the default (empty values count as unset)."""
    for name in ("CONVEYOR_REDIS_URL", "REDIS_URL"):
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return DEFAULT_URL


def _stop_if_left(server: EmbeddedRedis) -> None:
    server.terminate(grace=2.0)


class RedisServer(EmbeddedRedis):
    """A private redis-server for one test: ``kill()`` is a crash, ``start()`` again recovers
    from the AOF when ``appendonly`` is on."""

    def __init__(
        self,
        port: int | None = None,
        *,
        binary: str | None = None,
        appendonly: bool = False,
        appendfsync: str = "everysec",
        extra_args: Sequence[str] = (),
        dir: str | None = None,
    ) -> None:
        if appendfsync not in ("always", "everysec", "no"):
            raise ValueError(
                f"appendfsync must be 'always', 'everysec' or 'no', not {appendfsync!r}"
            )
        persistence = ["--appendonly", "yes" if appendonly else "no", "--appendfsync", appendfsync]
        super().__init__(port, binary=binary, args=[*persistence, *extra_args], directory=dir)
        self.appendonly = appendonly
        # Tests that fail half-way must not leave redis-servers behind.
        self._finalizer = weakref.finalize(self, _stop_if_left, self)
        self._finalizer.atexit = True

    def kill(self) -> None:
        """SIGKILL the server (a crash); its directory stays, so start() can recover."""
        proc, self.process = self.process, None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGKILL)
        proc.wait()


@contextlib.contextmanager
def redis_for(url: str | None = None, *, start: bool = True) -> Iterator[str]:
    """``url`` (default: configured_url()) when it answers, else a private server for the block."""
    target = url or configured_url()
    if ping(target):
        yield target
        return
    if not start:
        raise RuntimeError(f"no Redis answered at {redact_url(target)}; {FIX_HINT}")
    with RedisServer() as server:
        yield server.url


def _ensure(timeout: float = 10.0) -> int:
    """Print a URL that answers; start a daemonized redis-server for a dead loopback URL."""
    url = configured_url()
    if ping(url):
        print(url)
        return 0
    binary = find_redis_server_binary()
    parts = urlsplit(url)
    if parts.scheme != "redis" or parts.hostname not in (LOOPBACK, "localhost") or parts.password:
        print(
            f"error: no Redis answered at {redact_url(url)}, and it is not a plain "
            f"redis://127.0.0.1 URL a server could be started for; {FIX_HINT}",
            file=sys.stderr,
        )
        return 1
    if binary is None:
        print(f"error: no Redis at {url} and no redis-server binary; {FIX_HINT}", file=sys.stderr)
        return 1
    port = str(parts.port or SYSTEM_PORT)
    data_dir = tempfile.mkdtemp(prefix=f"conveyor-redis-{port}-")
    command = [
        binary,
        *("--daemonize", "yes", "--bind", LOOPBACK, "--port", port, "--save", ""),
        *("--appendonly", "no", "--dir", data_dir),
        *("--pidfile", os.path.join(data_dir, "redis.pid")),
        *("--logfile", os.path.join(data_dir, "redis.log")),
    ]
    print(f"starting {binary} on {LOOPBACK}:{port} (logs in {data_dir})", file=sys.stderr)
    with open(os.path.join(data_dir, STDERR_NAME), "wb") as err:
        subprocess.run(command, stdin=subprocess.DEVNULL, stdout=err, stderr=err, check=False)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ping(url, timeout=0.25):
            print(url)
            return 0
        time.sleep(0.05)
    print(f"error: {url} did not answer\n{log_tail(data_dir)}\n{FIX_HINT}", file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.redis_servers")
    parser.add_argument("command", choices=["ensure"])
    parser.parse_args(argv)
    return _ensure()


if __name__ == "__main__":
    sys.exit(main())
