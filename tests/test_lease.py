"""Lease renewal (renew.lua through operations.renew) against a real Redis.

The script reads the consumer's pending entries only in the window of the ids it renews, in
chunks: these tests hold ids spread among other consumers' entries and this consumer's own
unheld ones, so a window that misses an id, or a chunk that drops one, shows up as a lost
lease reported wrongly or an idle time not reset.
"""

from __future__ import annotations

import time

import redis

from conveyor import Conveyor
from conveyor.broker import operations
from conveyor.keys import GROUP


def _deliver(r: redis.Redis, stream: str, consumer: str, count: int) -> list[str]:
    reply = r.xreadgroup(GROUP, consumer, {stream: ">"}, count=count)
    return [entry_id.decode() for entry_id, _ in reply[0][1]]


def _idle_ms(r: redis.Redis, stream: str, entry_id: str) -> int:
    (entry,) = r.xpending_range(stream, GROUP, entry_id, entry_id, 1)
    return int(entry["time_since_delivered"])


def test_renewal_keeps_held_ids_among_others_and_reports_only_lost_ones(
    app: Conveyor, r: redis.Redis
) -> None:
    keys = app.keys("default")
    stream = keys.stream("normal")
    app.broker.call(operations.ensure_group(stream))
    pipe = r.pipeline()
    for i in range(3000):
        pipe.xadd(stream, {"task": "t", "args": f"[{i}]", "kwargs": "{}"})
    pipe.execute()
    # Interleave: this consumer's entries alternate with another's, and half of its own
    # entries are not in the renewed set (a full window must fall back to single lookups).
    mine: list[str] = []
    for _ in range(30):
        mine += _deliver(r, stream, "me", 20)
        _deliver(r, stream, "other", 20)
    held = mine[::2]  # 300 ids: two chunks of RENEW_CHUNK
    assert len(held) > operations.RENEW_CHUNK
    stolen, acked = held[5:8], held[250]
    r.xclaim(stream, GROUP, "other", 0, stolen, justid=True)
    r.xack(stream, GROUP, acked)
    time.sleep(0.2)

    calls = operations.renew(keys, "normal", "me", held, pel_limit=100_000)
    assert len(calls) == 2
    lost = [i for reply in app.broker.call_many(calls) for i in reply]

    assert sorted(lost) == sorted(stolen)  # the acked id is no loss
    renewed = [i for i in held if i not in stolen and i != acked]
    assert max(_idle_ms(r, stream, i) for i in renewed) < 150
    assert min(_idle_ms(r, stream, i) for i in mine[1::2]) >= 200  # not held: not renewed
    owners = {_owner(r, stream, i) for i in stolen}
    assert owners == {"other"}  # a renewal never takes a job back


def test_renewal_with_a_window_smaller_than_the_pending_entries_still_finds_each_id(
    app: Conveyor, r: redis.Redis
) -> None:
    keys = app.keys("default")
    stream = keys.stream("normal")
    app.broker.call(operations.ensure_group(stream))
    for i in range(50):
        r.xadd(stream, {"task": "t", "args": f"[{i}]", "kwargs": "{}"})
    mine = _deliver(r, stream, "me", 50)
    time.sleep(0.2)
    held = [mine[0], mine[-1]]  # a window of 2 + margin never reaches past the unheld ones
    calls = operations.renew(keys, "normal", "me", held, pel_limit=2)
    assert app.broker.call_many(calls) == [[]]
    assert _idle_ms(r, stream, mine[-1]) < 150
    assert _idle_ms(r, stream, mine[25]) >= 200


def _owner(r: redis.Redis, stream: str, entry_id: str) -> str:
    (entry,) = r.xpending_range(stream, GROUP, entry_id, entry_id, 1)
    return str(entry["consumer"].decode())
