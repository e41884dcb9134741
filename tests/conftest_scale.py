"""Session fixtures for a real Redis Cluster and a real Sentinel group (tests/redis_cluster.py).

Each is started once per session, the first time a test asks for it, and stopped at the end.
Test modules import the fixtures they use from here (until tests/conftest.py lists this file
in ``pytest_plugins``). Apps get a namespace of their own, deleted afterwards on every node.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from conveyor import Conveyor
from conveyor.testing import delete_namespace
from tests.redis_cluster import Cluster, SentinelGroup


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    with Cluster() as c:
        yield c


@pytest.fixture(scope="session")
def sentinel_group() -> Iterator[SentinelGroup]:
    with SentinelGroup() as g:
        yield g


def _app(url: str) -> Iterator[Conveyor]:
    app = Conveyor(url, namespace=f"test-{secrets.token_hex(4)}")
    yield app
    delete_namespace(app)
    app.close()


@pytest.fixture
def cluster_app(cluster: Cluster) -> Iterator[Conveyor]:
    """An app on the session's Redis Cluster, in a namespace of its own."""
    yield from _app(cluster.url)


@pytest.fixture
def sentinel_app(sentinel_group: SentinelGroup) -> Iterator[Conveyor]:
    """An app on the session's Sentinel group, in a namespace of its own."""
    yield from _app(sentinel_group.url)
