"""Planned fetches (fetch_plan.lua, then plain XREADGROUPs) against a real Redis.

The plan must name the most urgent levels first, never more entries than asked, and step
aside (None: fetch.lua reads) whenever entries would need setting apart or the lag is not
known. Worker-level ordering is in test_worker.py (test_higher_priority_levels_drain_first).
"""

from __future__ import annotations

import redis

from conveyor import Conveyor
from conveyor.broker import operations
from conveyor.keys import GROUP


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

    assert app.broker.call(operations.fetch_plan(keys, 3)) == [("high", 3)]
    assert app.broker.call(operations.fetch_plan(keys, 128)) == [("high", 5), ("normal", 123)]
    assert app.broker.call(operations.fetch_plan(keys, 1000)) == [
        ("high", 5),
        ("normal", 300),
        ("low", 7),
    ]
    got = app.broker.call(operations.read_level(keys, "high", "w", 5))
    assert [d.level for d in got] == ["high"] * 5
    assert [d.fields[b"args"] for d in got] == [f"[{i}]".encode() for i in range(5)]
    assert r.xpending(keys.stream("high"), GROUP)["pending"] == 5  # delivered to "w"
    # What was read is no longer counted: the next plan starts at the normal level.
    assert app.broker.call(operations.fetch_plan(keys, 10)) == [("normal", 10)]


def test_plan_steps_aside_for_a_pending_cancel_or_a_missing_group(
    app: Conveyor, r: redis.Redis
) -> None:
    keys = app.keys("default")
    for stream in keys.streams:
        app.broker.call(operations.ensure_group(stream))
    _fill(r, keys.stream("normal"), 3)
    r.sadd(keys.cancelled, "default:n:0-1")
    assert app.broker.call(operations.fetch_plan(keys, 10)) is None  # fetch.lua splits them
    r.delete(keys.cancelled)
    assert app.broker.call(operations.fetch_plan(keys, 10)) == [("normal", 3)]
    r.delete(keys.stream("high"))  # Redis lost the group: fetch.lua raises NOGROUP
    assert app.broker.call(operations.fetch_plan(keys, 10)) is None


def test_plan_of_an_empty_queue_reads_nothing(app: Conveyor) -> None:
    keys = app.keys("default")
    for stream in keys.streams:
        app.broker.call(operations.ensure_group(stream))
    assert app.broker.call(operations.fetch_plan(keys, 10)) == []
