"""Unique keys: one job per key within its window, for immediate and delayed enqueues."""

from __future__ import annotations

import asyncio

import pytest

from conveyor import ConfigurationError, Conveyor
from tests.conftest import worker_thread


def test_same_unique_key_returns_the_first_job_instead_of_a_duplicate(app: Conveyor) -> None:
    ran: list[str] = []

    @app.task
    def charge(order: str) -> str:
        ran.append(order)
        return f"charged {order}"

    first = charge.using(unique_key="order-1").enqueue("order-1")
    again = charge.using(unique_key="order-1").enqueue("order-1")
    other = charge.using(unique_key="order-2").enqueue("order-2")
    assert first.created and not again.created and other.created
    assert again.id == first.id and other.id != first.id
    assert app.broker.client.xlen(app.keys("default").stream("normal")) == 2
    with worker_thread(app):
        assert again.result(timeout=10) == "charged order-1"
        assert other.result(timeout=10) == "charged order-2"
    assert sorted(ran) == ["order-1", "order-2"]


async def test_unique_key_window_expires_and_allows_a_new_job(app: Conveyor) -> None:
    @app.task
    async def ping() -> None:
        return None

    first = await ping.using(unique_key="k", unique_for=0.2).enqueue_async()
    app.broker.client.pexpire(app.keys("default").unique("k"), 1)
    await asyncio.sleep(0.05)
    second = await ping.using(unique_key="k", unique_for=0.2).enqueue_async()
    assert second.created and second.id != first.id


def test_unique_key_dedupes_delayed_jobs(app: Conveyor) -> None:
    @app.task
    def report() -> None:
        return None

    a = report.using(unique_key="nightly").enqueue_in(60)
    b = report.using(unique_key="nightly").enqueue_in(60)
    assert a.created and not b.created and a.id == b.id
    assert app.broker.client.zcard(app.keys("default").delayed) == 1


def test_unique_key_with_spaces_is_rejected(app: Conveyor) -> None:
    @app.task
    def t() -> None:
        return None

    with pytest.raises(ConfigurationError, match="unique_key"):
        t.using(unique_key="has space")
