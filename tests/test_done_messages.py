"""Completion messages carry small records to waiters, so result() need not read them back.

complete.lua names the record keys it stored, then adds a blank line and each job's record
(empty when the record is too large, holds a newline, is not kept or would take the message
past 16 KiB of records). A waiter returns from the message alone when it carries its record,
and reads the record from Redis otherwise.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
import redis

from conveyor import Conveyor
from conveyor.broker import operations
from conveyor.broker.operations import Completion, Delivery
from conveyor.job import Job, _named
from conveyor.keys import QueueKeys
from tests.conftest import fast, worker_thread


def _fetched(app: Conveyor, n: int) -> tuple[QueueKeys, list[Delivery]]:
    @app.task
    async def noop(i: int) -> None:
        return None

    keys = app.keys("default")
    app.broker.call_many([operations.ensure_group(s) for s in keys.streams])
    noop.enqueue_many([(i,) for i in range(n)])
    return keys, app.broker.call(operations.fetch(keys, "w1", n))


def _message(pubsub: Any, timeout: float = 5.0) -> bytes:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = pubsub.get_message(timeout=0.1)
        if msg and msg["type"] in ("message", "pmessage"):
            data = msg["data"]
            assert isinstance(data, bytes)
            return data
    raise AssertionError("no completion message")


def _published(app: Conveyor, r: redis.Redis, keys: QueueKeys, done: list[Completion]) -> bytes:
    """Complete ``done`` as consumer w1 while subscribed: the message complete.lua sends."""
    pubsub = r.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(keys.done_channel)
    try:
        assert app.broker.call(operations.complete(keys, "w1", done)) == []
        return _message(pubsub)
    finally:
        pubsub.close()


def test_a_listened_channel_gets_each_small_kept_record_after_the_keys(
    app: Conveyor, r: redis.Redis
) -> None:
    keys, got = _fetched(app, 4)
    small = b'{"state":"done","result":1}'
    large = b'{"state":"done","result":"' + b"x" * 2000 + b'"}'
    newline = b'{"state":"done",\n"result":2}'
    records = [(small, 60_000), (large, 60_000), (newline, 60_000), (small, 0)]
    done = [
        Completion(d.level, d.entry_id, f"job-{i}", rec, ttl)
        for i, (d, (rec, ttl)) in enumerate(zip(got, records, strict=True))
    ]
    names, blank, inline = _published(app, r, keys, done).partition(b"\n\n")
    assert blank
    assert names.split(b"\n") == [keys.record(f"job-{i}").encode() for i in range(4)]
    # too large, holding a newline, or not kept (a zero TTL deletes it): read from Redis
    assert inline.split(b"\n") == [small, b"", b"", b""]


def test_one_message_carries_at_most_16_kib_of_records(app: Conveyor, r: redis.Redis) -> None:
    keys, got = _fetched(app, 20)
    record = b'{"state":"done","result":"' + b"x" * 972 + b'"}'
    assert len(record) == 1000
    done = [Completion(d.level, d.entry_id, f"job-{i}", record, 60_000) for i, d in enumerate(got)]
    _, _, inline = _published(app, r, keys, done).partition(b"\n\n")
    assert inline.split(b"\n") == [record] * 16 + [b""] * 4


def test_a_message_is_read_with_or_without_records() -> None:
    def msg(data: bytes) -> dict[str, Any]:
        return {"type": "message", "data": data}

    assert _named(msg(b"k1\nk2"), b"k2") == b""  # keys only: read the record
    assert _named(msg(b"k1\nk2"), b"k3") is None
    assert _named(msg(b"k1\nk2\n\n{}\n"), b"k1") == b"{}"
    assert _named(msg(b"k1\nk2\n\n{}\n"), b"k2") == b""
    assert _named({"type": "subscribe", "data": 1}, b"k1") is None


def _reads(job: Job[Any], monkeypatch: pytest.MonkeyPatch, is_async: bool) -> list[int]:
    """Count the record reads job.result() makes."""
    calls: list[int] = []
    name = "info_async" if is_async else "info"
    real = getattr(job, name)
    if is_async:

        async def counted_async() -> Any:
            calls.append(1)
            return await real()

        monkeypatch.setattr(job, name, counted_async)
    else:

        def counted() -> Any:
            calls.append(1)
            return real()

        monkeypatch.setattr(job, name, counted)
    return calls


@pytest.mark.parametrize("size", [10, 5000])
def test_result_returns_from_the_message_when_it_carries_the_record(
    app: Conveyor, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    go = threading.Event()

    @app.task
    def text(n: int) -> str:
        go.wait(10)
        return "y" * n

    with worker_thread(app, fast()):
        job = text.enqueue(size)
        reads = _reads(job, monkeypatch, is_async=False)
        threading.Timer(0.3, go.set).start()
        assert job.result(timeout=10) == "y" * size
    # one read before waiting; a record too large for the message is read again after it
    assert len(reads) == (1 if size < 1024 else 2)


def test_result_async_returns_from_the_message_too(
    app: Conveyor, monkeypatch: pytest.MonkeyPatch
) -> None:
    go = threading.Event()

    @app.task
    def three() -> int:
        go.wait(10)
        return 3

    async def wait(job: Job[int]) -> int:
        try:
            return await job.result_async(timeout=10)
        finally:
            await app.aclose()

    with worker_thread(app, fast()):
        job = three.enqueue()
        reads = _reads(job, monkeypatch, is_async=True)
        threading.Timer(0.3, go.set).start()
        assert asyncio.run(wait(job)) == 3
    assert len(reads) == 1
