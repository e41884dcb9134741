"""Planned fetches (fetch_plan.lua, then plain XREADGROUPs) against a real Redis.

The plan must name the most urgent levels first, never more entries than asked, and step
aside (None: fetch.lua reads) whenever entries would need setting apart or the lag is not
known. Each worker fetch asks for the plan its next fetch reads by; ordering through the
worker is also in test_worker.py (test_higher_priority_levels_drain_first).
"""

from __future__ import annotations

import asyncio

import redis

from conveyor import Conveyor
from conveyor.broker import operations
from conveyor.keys import GROUP
from conveyor.worker import Worker
from tests.conftest import fast, wait_until, worker_thread


def _fill(r: redis.Redis, stream: str, n: int) -> None:
    pipe = r.pipeline()
    for i in range(n):
        pipe.xadd(stream, {"task": "t", "args": f"[{i}]", "kwargs": "{}"})
    pipe.execute()


def test_plan_counts_the_most_urgent_levels_first_within_the_count(
    app: Conveyor, r: redis.Redis
) -> None:
    keys = app.keys("default")
    for stream in keys.streams:
        app.broker.call(operations.ensure_group(stream))
    _fill(r, keys.stream("high"), 5)
    _fill(r, keys.stream("normal"), 300)
    _fill(r, keys.stream("low"), 7)

    assert app.broker.call(operations.fetch_plan(keys, 3)).reads == [("high", 3)]
    assert app.broker.call(operations.fetch_plan(keys, 128)).reads == [
        ("high", 5),
        ("normal", 123),
    ]
    assert app.broker.call(operations.fetch_plan(keys, 1000)).reads == [
        ("high", 5),
        ("normal", 300),
        ("low", 7),
    ]
    got = app.broker.call(operations.read_level(keys, "high", "w", 5))
    assert [d.level for d in got] == ["high"] * 5
    assert [d.fields[b"args"] for d in got] == [f"[{i}]".encode() for i in range(5)]
    assert r.xpending(keys.stream("high"), GROUP)["pending"] == 5  # delivered to "w"
    # What was read is no longer counted: the next plan starts at the normal level.
    assert app.broker.call(operations.fetch_plan(keys, 10)).reads == [("normal", 10)]


def test_plan_steps_aside_for_a_pending_cancel_or_a_missing_group(
    app: Conveyor, r: redis.Redis
) -> None:
    keys = app.keys("default")
    for stream in keys.streams:
        app.broker.call(operations.ensure_group(stream))
    _fill(r, keys.stream("normal"), 3)
    r.sadd(keys.cancelled, "default:n:0-1")
    # fetch.lua splits them; what an older plan read must be checked
    assert app.broker.call(operations.fetch_plan(keys, 10)) == operations.Plan(None, True)
    r.delete(keys.cancelled)
    assert app.broker.call(operations.fetch_plan(keys, 10)) == operations.Plan([("normal", 3)])
    r.delete(keys.stream("high"))  # Redis lost the group: fetch.lua raises NOGROUP
    assert app.broker.call(operations.fetch_plan(keys, 10)) == operations.Plan(None, False)


def test_plan_of_an_empty_queue_reads_nothing(app: Conveyor) -> None:
    keys = app.keys("default")
    for stream in keys.streams:
        app.broker.call(operations.ensure_group(stream))
    assert app.broker.call(operations.fetch_plan(keys, 10)) == operations.Plan([])


def test_worker_reads_by_plan_most_urgent_first(app: Conveyor) -> None:
    order: list[tuple[str, int]] = []

    @app.task
    def record(level: str, i: int) -> None:
        order.append((level, i))

    with worker_thread(app, fast(concurrency=1)):
        pass  # the consumer groups exist at id 0 before the jobs are added
    for i in range(5):
        record.using(priority="low").enqueue("low", i)
    for i in range(5):
        record.enqueue("normal", i)
    for i in range(5):
        record.using(priority="high").enqueue("high", i)
    reads: list[tuple[str, int]] = []
    plain = operations.read_level

    def counted(*args: object, **kwargs: object) -> object:
        reads.append((str(args[1]), int(args[3])))  # type: ignore[call-overload]
        return plain(*args, **kwargs)  # type: ignore[arg-type]

    operations.read_level = counted  # type: ignore[assignment]
    try:
        with worker_thread(app, fast(concurrency=1, prefetch=0)):
            wait_until(lambda: len(order) == 15, 10, "15 jobs to run")
    finally:
        operations.read_level = plain
    assert order == [(level, i) for level in ("high", "normal", "low") for i in range(5)]
    assert len(reads) >= 10, reads  # after the first fetch, plain reads by plan


def test_a_cancel_marked_after_the_plan_is_checked_before_anything_runs(
    app: Conveyor, r: redis.Redis
) -> None:
    """The plan a fetch reads by is a fetch old: a job cancelled while queued since then is
    read by a plain XREADGROUP, which cannot set it apart. The plan asked after the reads
    sees the mark and steps aside, and the batch goes to the cancel check first."""

    @app.task
    def t(i: int) -> None:
        return None

    keys = app.keys("default")
    for stream in keys.streams:
        app.broker.call(operations.ensure_group(stream))
    jobs = [t.enqueue(i) for i in range(3)]
    worker = Worker(app, fast(concurrency=4))
    plan = app.broker.call(operations.fetch_plan(keys, 128))
    assert plan.reads == [("normal", 3)]
    worker.fetcher._plans["default"] = plan  # what the fetch before this one found
    assert jobs[1].cancel()

    async def fetch() -> tuple[list[str], list[str]]:
        got = await worker.fetcher._fetch(keys, 10)
        kept = await worker.runner.drop_cancelled(got.marked)
        await app.broker.aclose()
        return [d.entry_id for d in got], [d.entry_id for d in kept]

    run, kept = asyncio.run(fetch())
    assert run == []  # nothing handed to run before the check
    assert [f"default:n:{e}" for e in kept] == [jobs[0].id, jobs[2].id]
    assert jobs[1].status() == "cancelled"
    assert r.xpending(keys.stream("normal"), GROUP)["pending"] == 2  # the cancelled one acked
