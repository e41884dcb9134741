"""Cancels that land in the windows between a worker's steps (review of issue 11), against a
real Redis with the real scripts: each ends the job `cancelled` with a record that expires,
frees its unique key and publishes, instead of leaving a job with no end.
"""

from __future__ import annotations

import json

import pytest
import redis

from conveyor import Conveyor
from conveyor.broker import operations
from conveyor.cancellation import CancelOutcome, cancel
from conveyor.keys import GROUP, QueueKeys
from conveyor.limits import Limits, RateLimit
from tests import limits_driver as driver

TTL = 60_000


@pytest.fixture
def keys(app: Conveyor) -> QueueKeys:
    return driver.setup(app)


def record(r: redis.Redis, keys: QueueKeys, job_id: str) -> dict[str, object]:
    return dict(json.loads(r.get(keys.record(job_id)) or b"{}"))


def test_a_cancel_between_delivery_and_the_limit_gate_ends_the_job_instead_of_parking_it(
    app: Conveyor, keys: QueueKeys, r: redis.Redis
) -> None:
    limit = Limits(rate=RateLimit.parse("1/h"))
    driver.add_jobs(app, keys, "t", ["x", "x"])
    first, second = app.broker.call(operations.fetch(keys, "w", 2))
    id1, p1, rec1, _ = driver.parking(first)
    id2, p2, rec2, _ = driver.parking(second)
    assert app.broker.call(limit.gate(keys, "w", first, id1, p1, rec1, task="t", lease_ms=0)).run
    # delivered, not yet past its gate: the cancel finds it pending and only marks it
    assert cancel(app.broker, keys, id2, ttl_ms=TTL).outcome == CancelOutcome.SIGNALLED
    with r.pubsub() as sub:
        sub.subscribe(keys.done_channel)
        sub.get_message(timeout=1)
        gated = app.broker.call(
            limit.gate(keys, "w", second, id2, p2, rec2, task="t", lease_ms=0, ttl_ms=TTL)
        )
        published = sub.get_message(timeout=2)
    assert gated.outcome == "cancelled"
    assert record(r, keys, id2)["state"] == "cancelled"
    assert 0 < r.pttl(keys.record(id2)) <= TTL
    assert published is not None and published["data"] == keys.record(id2).encode()
    # not parked, unmarked, acked: nothing brings it back with a record that forgot the cancel
    assert r.zscore(keys.delayed, id2) is None and not r.hexists(keys.payloads, id2)
    assert not r.sismember(keys.cancelled, id2)
    assert r.xpending(keys.stream("normal"), GROUP)["pending"] == 1  # only the admitted one
    driver.promote_due(app, keys)
    assert app.broker.call(operations.fetch(keys, "w", 10)) == []
    assert record(r, keys, id2)["state"] == "cancelled"
