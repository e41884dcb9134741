"""The ``expires`` option (conveyor.expiry, expire.lua): the policy without Redis, and the
transition against a real Redis, set up the way the worker delivers jobs."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from conveyor import Conveyor, JobState
from conveyor.broker import enqueue_calls, operations
from conveyor.broker.operations import Delivery
from conveyor.errors import ConfigurationError
from conveyor.expiry import expire, expires_ms, is_expired, ready_at_ms
from conveyor.keys import GROUP, QueueKeys, job_id_for
from conveyor.wire import decode_fields, decode_record
from conveyor.worker import outcomes
from tests.conftest import fast, wait_until, worker_thread

TTL = 60_000
FIELDS = {"task": "t", "args": "[]", "kwargs": "{}", "version": "1"}


@pytest.fixture
def keys(app: Conveyor) -> QueueKeys:
    keys = app.keys("q")
    app.broker.call_many([operations.ensure_group(s) for s in keys.streams])
    return keys


def deliver(app: Conveyor, keys: QueueKeys, **extra: str) -> tuple[str, Any]:
    entry = app.broker.call(enqueue_calls.enqueue(keys, "normal", {**FIELDS, **extra}))
    (d,) = app.broker.call(operations.fetch(keys, "w1", 1))
    assert d.entry_id == entry
    return job_id_for(keys.queue, "normal", entry), d


def test_expires_option_is_validated_naming_the_option() -> None:
    assert expires_ms(None) is None
    assert expires_ms(300) == 300_000
    assert expires_ms(0.0004) == 1
    for bad in (0, -5, float("nan"), float("inf"), "300", True):
        with pytest.raises(ConfigurationError, match="expires"):
            expires_ms(bad)  # type: ignore[arg-type]


def test_expiry_counts_from_the_entry_id_on_redis_clock() -> None:
    assert ready_at_ms("1700000000000-3") == 1700000000000
    assert not is_expired("1000-0", 500, 1500)
    assert is_expired("1000-0", 500, 1501)


def test_job_in_time_is_left_to_run(app: Conveyor, keys: QueueKeys, r: Any) -> None:
    job_id, d = deliver(app, keys)
    assert (
        app.broker.call(expire(keys, "w1", "normal", d.entry_id, job_id, 60_000, ttl_ms=TTL)) == 0
    )
    assert r.xpending(keys.stream("normal"), GROUP)["pending"] == 1
    assert not r.exists(keys.record(job_id))


def test_job_past_its_limit_ends_expired_with_reason_not_dead(
    app: Conveyor, keys: QueueKeys, r: Any
) -> None:
    job_id, d = deliver(app, keys)
    time.sleep(0.03)
    call = expire(keys, "w1", "normal", d.entry_id, job_id, 10, ttl_ms=TTL, attempt=1)
    assert app.broker.call(call) == 1
    assert r.xpending(keys.stream("normal"), GROUP)["pending"] == 0
    assert r.xlen(keys.dead) == 0 and r.zcard(keys.delayed) == 0
    raw = r.get(keys.record(job_id))
    rec = decode_record(raw)
    assert rec.state == "expired" and rec.reason is not None
    assert rec.reason.startswith("expires:") and rec.attempt == 1
    assert json.loads(raw)["waited_ms"] >= 10
    assert 0 < r.pttl(keys.record(job_id)) <= TTL


def test_expire_by_a_worker_that_lost_the_entry_changes_nothing(
    app: Conveyor, keys: QueueKeys, r: Any
) -> None:
    job_id, d = deliver(app, keys)
    r.xclaim(keys.stream("normal"), GROUP, "w2", 0, [d.entry_id])
    time.sleep(0.03)
    assert app.broker.call(expire(keys, "w1", "normal", d.entry_id, job_id, 10, ttl_ms=TTL)) == -1
    assert r.xpending(keys.stream("normal"), GROUP)["pending"] == 1
    assert not r.exists(keys.record(job_id))


def test_expiry_frees_a_unique_key_held_until_done(app: Conveyor, keys: QueueKeys, r: Any) -> None:
    job_id, d = deliver(app, keys, unique="nightly")
    r.set(keys.unique("nightly"), job_id)
    time.sleep(0.03)
    call = expire(keys, "w1", "normal", d.entry_id, job_id, 10, ttl_ms=TTL, unique_name="nightly")
    assert app.broker.call(call) == 1
    assert not r.exists(keys.unique("nightly"))


def test_expiry_clears_a_cancel_mark_of_the_job(app: Conveyor, keys: QueueKeys, r: Any) -> None:
    """A cancel that found the job delivered only marks it; if the job then expires, the
    mark must go with it (else SCARD > 0 for ever and every fetch pays the per-entry check)."""
    job_id, d = deliver(app, keys)
    r.sadd(keys.cancelled, job_id)
    time.sleep(0.01)
    ended = app.broker.call(expire(keys, "w1", "normal", d.entry_id, job_id, 1, ttl_ms=TTL))
    assert ended == 1
    assert decode_record(r.get(keys.record(job_id))).state == "expired"
    assert r.scard(keys.cancelled) == 0


def test_a_rate_limited_job_is_not_given_a_new_expiry_clock_each_time_it_waits(
    app: Conveyor, r: Any
) -> None:
    """A limited job waits as a new entry: measured from that entry, its wait restarted at
    every park, so 1,000 jobs at 1/s with expires=300 ran for 1,000 s. The first park writes
    `ready_at` (when it first became ready) and expire.lua measures from it. At 1/s with
    expires=1.5 s, 4 jobs enqueued together run about 1 s apart: the last two must expire
    (whichever order the gate admits them in)."""
    ran: list[int] = []

    @app.task(rate="1/s", expires=1.5)
    def limited(i: int) -> None:
        ran.append(i)

    jobs = [limited.enqueue(i) for i in range(4)]
    with worker_thread(app, fast()):
        wait_until(lambda: all(j.status().finished for j in jobs), 20, "all 4 jobs to end")
    expired = [j for j in jobs if j.status() is JobState.EXPIRED]
    assert 1 <= len(ran) <= 3 and len(ran) + len(expired) == 4
    for job in expired:
        waited = json.loads(r.get(app.keys("default").record(job.id)))["waited_ms"]
        assert waited > 1500


def test_ready_at_is_kept_by_waits_for_a_limit_and_dropped_by_a_retry() -> None:
    """moved_fields: the first wait writes when the job first became ready (its entry id),
    later waits keep it, and a retry drops it (a retried job is ready at its due time)."""
    first = Delivery("q", "normal", "1000-0", {k.encode(): v.encode() for k, v in FIELDS.items()})
    env = decode_fields(first.fields)
    moved = outcomes.moved_fields(env, first, None, keep_clock=True, id="q:n:1000-0")
    assert moved["ready_at"] == "1000"
    again = Delivery(
        "q", "normal", "9000-0", {k.encode(): str(v).encode() for k, v in moved.items()}
    )
    assert outcomes.ready_at(again) == "1000"
    kept = outcomes.moved_fields(env, again, None, keep_clock=True, id="q:n:1000-0")
    assert kept["ready_at"] == "1000"
    assert "ready_at" not in outcomes.moved_fields(env, again, None, id="q:n:1000-0", attempt=2)
