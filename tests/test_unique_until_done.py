"""Ending transitions free a unique key held "until done" and drop a stale cancel mark
(issue 11, items 1 and 8), with complete.lua, dead.lua and retry.lua against a real Redis."""

from __future__ import annotations

import json
from typing import Any

import pytest

from conveyor import Conveyor
from conveyor.broker import enqueue_calls, operations
from conveyor.cancellation import CancelOutcome, cancel, cancelled_record
from conveyor.keys import GROUP, QueueKeys, job_id_for
from conveyor.wire import JobRecord, decode_record, encode_record

TTL = 60_000
FIELDS = {"task": "t", "args": "[]", "kwargs": "{}", "version": "1"}


@pytest.fixture
def keys(app: Conveyor) -> QueueKeys:
    keys = app.keys("q")
    app.broker.call_many([operations.ensure_group(s) for s in keys.streams])
    return keys


def running(app: Conveyor, keys: QueueKeys, r: Any, unique: str | None) -> tuple[str, Any]:
    extra = {"unique": unique} if unique else {}
    entry = app.broker.call(enqueue_calls.enqueue(keys, "normal", {**FIELDS, **extra}))
    job_id = job_id_for(keys.queue, "normal", entry)
    if unique:
        r.set(keys.unique(unique), job_id)
    (d,) = app.broker.call(operations.fetch(keys, "w1", 1))
    return job_id, d


def complete(app: Conveyor, keys: QueueKeys, jobs: list[tuple[str, Any, str | None]]) -> Any:
    """complete.lua through operations.complete: (job_id, delivery, unique)."""
    rec = encode_record(JobRecord(state="done"))
    done = [
        operations.Completion(d.level, d.entry_id, job_id, rec, TTL, unique or "")
        for job_id, d, unique in jobs
    ]
    return app.broker.call(operations.complete(keys, "w1", done))


def test_complete_frees_unique_keys_held_until_done_and_only_those(
    app: Conveyor, keys: QueueKeys, r: Any
) -> None:
    a, da = running(app, keys, r, "a")
    b, db = running(app, keys, r, "b")
    c, dc = running(app, keys, r, None)
    r.set(keys.unique("b"), "q:n:9-9")  # b's window ran out and a newer job took the key
    assert complete(app, keys, [(a, da, "a"), (b, db, "b"), (c, dc, None)]) == []
    assert not r.exists(keys.unique("a"))
    assert r.get(keys.unique("b")) == b"q:n:9-9"
    assert r.xpending(keys.stream("normal"), GROUP)["pending"] == 0
    assert decode_record(r.get(keys.record(c))).state == "done"


def test_complete_drops_the_mark_of_a_job_cancelled_after_its_last_beat(
    app: Conveyor, keys: QueueKeys, r: Any
) -> None:
    job_id, d = running(app, keys, r, None)
    assert cancel(app.broker, keys, job_id, ttl_ms=TTL).outcome is CancelOutcome.SIGNALLED
    assert complete(app, keys, [(job_id, d, None)]) == []
    assert r.scard(keys.cancelled) == 0  # fetches stop paying for the check


def test_dead_frees_the_unique_key_and_the_mark(app: Conveyor, keys: QueueKeys, r: Any) -> None:
    job_id, d = running(app, keys, r, "u")
    cancel(app.broker, keys, job_id, ttl_ms=TTL)
    rec = encode_record(JobRecord(state="dead", error="boom"))
    dead_id = app.broker.call(
        operations.dead(keys, "w1", d, job_id, rec, TTL, [("error", "boom")], unique="u")
    )
    assert r.xrange(keys.dead)[0][0].decode() == dead_id
    assert not r.exists(keys.unique("u")) and r.scard(keys.cancelled) == 0


def retry(app: Conveyor, keys: QueueKeys, job_id: str, d: Any, unique: str | None) -> int:
    payload = json.dumps({**FIELDS, "id": job_id}).encode()
    call = operations.retry(
        keys,
        "w1",
        d,
        job_id,
        payload,
        0,
        encode_record(JobRecord(state="retrying", attempt=1)),
        cancelled_record=cancelled_record(),
        ttl_ms=TTL,
        unique=unique or "",
    )
    return app.broker.call(call)


def test_retry_of_a_job_cancelled_while_running_ends_it_cancelled(
    app: Conveyor, keys: QueueKeys, r: Any
) -> None:
    job_id, d = running(app, keys, r, "r")
    assert cancel(app.broker, keys, job_id, ttl_ms=TTL).outcome is CancelOutcome.SIGNALLED
    assert retry(app, keys, job_id, d, "r") == 2
    assert r.zcard(keys.delayed) == 0 and r.hlen(keys.payloads) == 0
    assert decode_record(r.get(keys.record(job_id))).state == "cancelled"
    assert not r.exists(keys.unique("r")) and r.scard(keys.cancelled) == 0


def test_retry_of_an_unmarked_job_parks_it_as_before(
    app: Conveyor, keys: QueueKeys, r: Any
) -> None:
    job_id, d = running(app, keys, r, "r")
    assert retry(app, keys, job_id, d, "r") == 1
    assert r.zscore(keys.delayed, job_id) is not None
    assert decode_record(r.get(keys.record(job_id))).state == "retrying"
    assert r.get(keys.unique("r")) == job_id.encode()  # not ended: the key stays
