"""A Redis that cannot serve us fails at once with an error that says why and what to do.

Each case runs against a real server started for it: a redis-server that requires a
password, one whose eviction policy may drop keys, the shared Redis with a database number it
does not have, and an HTTP server where a Redis was expected.
"""

from __future__ import annotations

import contextlib
import http.server
import logging
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
import redis

from conveyor import Conveyor, WorkerSettings
from conveyor.broker import Broker
from conveyor.errors import AuthenticationFailed, ConfigurationError, ConnectionFailed
from tests.conftest import worker_thread

PASSWORD = "s3cret-pw"
#: "within a few seconds": a behaviour bound, far below the minute of retries it replaces
FAST = 5.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def private_redis(*args: str, password: str | None = None) -> Iterator[str]:
    """A redis-server of this test alone on a free loopback port; yields its URL (without
    credentials) and stops the process it started, by its handle."""
    port = _free_port()
    directory = tempfile.mkdtemp(prefix="conveyor-broker-test-")
    command = ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", ""]
    command += ["--appendonly", "no", "--dir", directory, *args]
    if password:
        command += ["--requirepass", password]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    probe = redis.Redis(port=port, password=password, socket_timeout=1)
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(redis.ConnectionError):
                if probe.ping():
                    break
            assert proc.poll() is None, "redis-server exited at start"
            assert time.monotonic() < deadline, "redis-server did not answer within 10s"
            time.sleep(0.02)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        probe.close()
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def locked_url() -> Iterator[str]:
    with private_redis(password=PASSWORD) as url:
        yield url


def with_credentials(url: str, credentials: str) -> str:
    return url.replace("redis://", f"redis://{credentials}@")


def fails_fast(broker: Broker) -> BaseException:
    started = time.monotonic()
    with pytest.raises(ConnectionFailed) as info:
        broker.server_info()
    elapsed = time.monotonic() - started
    assert elapsed < FAST, f"failed only after {elapsed:.1f}s"
    broker.close()
    return info.value


def test_a_password_protected_redis_reached_without_one_says_authentication_is_required(
    locked_url: str,
) -> None:
    error = fails_fast(Broker(locked_url))
    text = str(error)
    assert isinstance(error, AuthenticationFailed)
    assert "authentication is required" in text and locked_url in text
    assert "redis://:PASSWORD@host:port/0" in text and "redis://USER:PASSWORD@" in text
    assert "redis-server" not in text and "\n" not in text


@pytest.mark.parametrize("credentials", [":wrong", "bob:wrong", "default:wrong"])
def test_a_wrong_password_is_refused_fast_and_never_shown(
    locked_url: str, credentials: str
) -> None:
    error = fails_fast(Broker(with_credentials(locked_url, credentials)))
    text = str(error)
    assert isinstance(error, AuthenticationFailed)
    assert "password was refused" in text and "wrong" not in text
    assert urlsplit(locked_url).netloc.split("@")[-1] in text and "***" in text


def test_the_right_password_in_the_url_connects(locked_url: str) -> None:
    broker = Broker(with_credentials(locked_url, f":{PASSWORD}"))
    assert broker.server_info().version >= (6, 2, 0)
    broker.close()


async def test_enqueue_to_a_locked_redis_fails_fast_sync_and_async(locked_url: str) -> None:
    app = Conveyor(locked_url, namespace="locked")

    @app.task
    def work() -> None: ...

    started = time.monotonic()
    with pytest.raises(AuthenticationFailed):
        work.enqueue()
    assert time.monotonic() - started < FAST
    started = time.monotonic()
    with pytest.raises(AuthenticationFailed):
        await work.enqueue_async()
    assert time.monotonic() - started < FAST
    app.close()
    await app.aclose()


def test_a_database_number_the_server_lacks_is_a_configuration_error(redis_url: str) -> None:
    parts = urlsplit(redis_url)
    url = f"redis://{parts.netloc}/99"
    app = Conveyor(url, namespace="nodb")

    @app.task
    def work() -> None: ...

    started = time.monotonic()
    with pytest.raises(ConfigurationError) as info:
        work.enqueue()
    assert time.monotonic() - started < FAST
    text = str(info.value)
    assert "DB index is out of range" in text and "/0" in text and "\n" not in text
    assert "redis-server" not in text
    app.close()


async def test_a_database_number_the_server_lacks_is_a_configuration_error_async(
    redis_url: str,
) -> None:
    parts = urlsplit(redis_url)
    broker = Broker(f"redis://{parts.netloc}/99")
    with pytest.raises(ConfigurationError):
        await broker.aserver_info()
    await broker.aclose()


@pytest.fixture(scope="module")
def http_url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"redis://127.0.0.1:{server.server_address[1]}/0"
    server.shutdown()
    server.server_close()


def test_a_url_pointing_at_an_http_server_says_it_is_not_redis(http_url: str) -> None:
    error = fails_fast(Broker(http_url))
    text = str(error)
    assert "Something other than Redis answered" in text and http_url in text
    assert "redis-server" not in text and "\n" not in text


async def test_a_url_pointing_at_an_http_server_fails_fast_async(http_url: str) -> None:
    broker = Broker(http_url)
    started = time.monotonic()
    with pytest.raises(ConnectionFailed, match="Something other than Redis"):
        await broker.aserver_info()
    assert time.monotonic() - started < FAST
    await broker.aclose()


def test_the_eviction_warning_is_logged_once_per_worker_start(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A worker opens three brokers on its URL (jobs, fetch, leases); one warning is enough."""
    with private_redis("--maxmemory-policy", "allkeys-lru") as url:
        app = Conveyor(url, namespace="evicting")

        @app.task
        def work() -> int:
            return 1

        with caplog.at_level(logging.WARNING, logger="conveyor.server"):
            job = work.enqueue()
            with worker_thread(app, WorkerSettings(concurrency=2, block_ms=100)):
                assert job.result(timeout=10) == 1
            Broker(url).server_info()  # another client in this process: said already
        app.close()
    warnings = [r for r in caplog.records if r.name == "conveyor.server"]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "allkeys-lru" in warnings[0].getMessage()
