"""Shared fixtures: a real Redis (found or started) and a private key namespace per test.

Workers run in-process through conveyor.testing (re-exported here for the tests).

Only a real Redis: if none answers and none can be started, the session fails.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from conveyor import Conveyor, Leases, WorkerSettings
from conveyor.testing import delete_namespace, worker_task, worker_thread
from tests.redis_servers import configured_url, redis_for

__all__ = ["fast", "wait_until", "worker_task", "worker_thread"]

# Cluster and Sentinel groups (started only by the tests that ask for them).
pytest_plugins = ["tests.conftest_scale", "tests.flow_fixtures"]


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``check`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


def fast(**changes: Any) -> WorkerSettings:
    """Worker settings for tests: short leases, short blocking reads, quick promotion."""
    values: dict[str, Any] = {
        "concurrency": 4,
        "leases": Leases(timeout=1.0),
        "block_ms": 100,
        "promote_every": 0.05,
        "shutdown_grace": 3.0,
    }
    values.update(changes)
    return WorkerSettings(**values)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    with redis_for(configured_url()) as url:
        yield url


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def namespace(redis_url: str) -> Iterator[str]:
    """A key namespace of this test alone; every key under it is deleted afterwards."""
    ns = f"test-{secrets.token_hex(4)}"
    yield ns
    cleaner = Conveyor(redis_url, namespace=ns)
    delete_namespace(cleaner)
    cleaner.close()


@pytest.fixture
def app(redis_url: str, namespace: str) -> Iterator[Conveyor]:
    a = Conveyor(redis_url, namespace=namespace)
    yield a
    a.close()
