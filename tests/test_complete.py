"""The batched completion script: ack and store only what the consumer still owns."""

from __future__ import annotations

import redis

from conveyor import Conveyor
from conveyor.broker import operations
from conveyor.broker.operations import Completion, Delivery
from conveyor.keys import GROUP, QueueKeys


def _queue(app: Conveyor, jobs: dict[str, int]) -> QueueKeys:
    """The default queue holding ``jobs[level]`` no-op jobs at each level."""

    @app.task
    async def noop(i: int) -> None:
        return None

    keys = app.keys("default")
    app.broker.call_many([operations.ensure_group(s) for s in keys.streams])
    for level, n in jobs.items():
        noop.using(priority=level).enqueue_many([(i,) for i in range(n)])
    return keys


def _fetch(app: Conveyor, keys: QueueKeys, consumer: str, count: int) -> list[Delivery]:
    return app.broker.call(operations.fetch(keys, consumer, count))


def _done(d: Delivery) -> Completion:
    return Completion(d.level, d.entry_id, f"job-{d.entry_id}", b'{"state":"done"}', 60_000)


def _complete(app: Conveyor, keys: QueueKeys, consumer: str, done: list[Completion]) -> list[int]:
    return app.broker.call(operations.complete(keys, consumer, done))


def _pending(r: redis.Redis, keys: QueueKeys, level: str, consumer: str) -> set[str]:
    rows = r.xpending_range(keys.stream(level), GROUP, "-", "+", 1000, consumername=consumer)
    return {row["message_id"].decode() for row in rows}


def test_owned_jobs_are_acked_and_their_records_stored(app: Conveyor, r: redis.Redis) -> None:
    keys = _queue(app, {"normal": 3})
    got = _fetch(app, keys, "w1", 3)
    assert _complete(app, keys, "w1", [_done(d) for d in got[:2]]) == []
    assert _pending(r, keys, "normal", "w1") == {got[2].entry_id}
    for d in got[:2]:
        assert r.get(keys.record(f"job-{d.entry_id}")) == b'{"state":"done"}'
        assert 0 < r.pttl(keys.record(f"job-{d.entry_id}")) <= 60_000
    assert r.get(keys.record(f"job-{got[2].entry_id}")) is None


def test_a_job_reclaimed_by_another_consumer_is_refused_and_left_to_it(
    app: Conveyor, r: redis.Redis
) -> None:
    keys = _queue(app, {"normal": 2})
    mine, stolen = _fetch(app, keys, "w1", 2)
    r.xclaim(keys.stream("normal"), GROUP, "w2", 0, [stolen.entry_id])
    assert _complete(app, keys, "w1", [_done(stolen), _done(mine)]) == [0]
    assert _pending(r, keys, "normal", "w2") == {stolen.entry_id}
    assert r.get(keys.record(f"job-{stolen.entry_id}")) is None
    assert r.get(keys.record(f"job-{mine.entry_id}")) is not None


def test_ownership_holds_when_the_consumer_holds_far_more_than_the_batch(
    app: Conveyor, r: redis.Redis
) -> None:
    """The script reads a window of the oldest pending entries and looks the rest up one by
    one: a job outside that window is still acked when owned and refused when not."""
    keys = _queue(app, {"normal": 60})
    got = _fetch(app, keys, "w1", 60)
    newest, taken = got[-1], got[-2]
    r.xclaim(keys.stream("normal"), GROUP, "w2", 0, [taken.entry_id])
    assert _complete(app, keys, "w1", [_done(newest), _done(taken)]) == [1]
    assert newest.entry_id not in _pending(r, keys, "normal", "w1")
    assert _pending(r, keys, "normal", "w2") == {taken.entry_id}
    assert len(_pending(r, keys, "normal", "w1")) == 58


def test_refusals_are_reported_by_position_across_levels(app: Conveyor, r: redis.Redis) -> None:
    keys = _queue(app, {"high": 1, "low": 2})
    high, low_kept, low_taken = _fetch(app, keys, "w1", 3)
    assert [d.level for d in (high, low_kept, low_taken)] == ["high", "low", "low"]
    r.xclaim(keys.stream("low"), GROUP, "w2", 0, [low_taken.entry_id])
    # The script sees the jobs grouped by level (low, low, high): the refused one is second
    # there and third here, and must be reported by its place in this batch.
    assert _complete(app, keys, "w1", [_done(low_kept), _done(high), _done(low_taken)]) == [2]
    assert _pending(r, keys, "high", "w1") == set() and _pending(r, keys, "low", "w1") == set()
    assert _pending(r, keys, "low", "w2") == {low_taken.entry_id}


def test_a_zero_ttl_deletes_the_record_instead_of_storing_it(app: Conveyor, r: redis.Redis) -> None:
    keys = _queue(app, {"normal": 1})
    (d,) = _fetch(app, keys, "w1", 1)
    r.set(keys.record(f"job-{d.entry_id}"), b'{"state":"running"}')
    done = Completion(d.level, d.entry_id, f"job-{d.entry_id}", b'{"state":"done"}', 0)
    assert _complete(app, keys, "w1", [done]) == []
    assert r.get(keys.record(f"job-{d.entry_id}")) is None
    assert _pending(r, keys, "normal", "w1") == set()
