"""Cancelling a job in each place it can be (conveyor.cancellation, cancel.lua and friends),
against a real Redis. Each state is set up with the scripts and commands the producer and
worker use (XADD, schedule.lua, fetch.lua, retry.lua, complete.lua, dead.lua); the worker
itself is not involved.
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import pytest

from conveyor import Conveyor
from conveyor.broker import enqueue_calls, operations
from conveyor.cancellation import (
    CancelOutcome,
    CancelResult,
    cancel,
    cancel_async,
    cancel_flags,
    cancelled_record,
    end_cancelled,
)
from conveyor.cli.jobs import describe
from conveyor.errors import ConfigurationError, JobNotFound
from conveyor.keys import GROUP, QueueKeys, delayed_job_id, job_id_for
from conveyor.wire import JobRecord, decode_record, encode_record

TTL = 60_000
FIELDS = {"task": "t", "args": "[]", "kwargs": "{}", "version": "1"}


@pytest.fixture
def keys(app: Conveyor) -> QueueKeys:
    keys = app.keys("q")
    app.broker.call_many([operations.ensure_group(s) for s in keys.streams])
    return keys


def enqueue(app: Conveyor, keys: QueueKeys, **extra: str) -> str:
    entry = app.broker.call(enqueue_calls.enqueue(keys, "normal", {**FIELDS, **extra}))
    return job_id_for(keys.queue, "normal", entry)


def schedule(app: Conveyor, keys: QueueKeys, token: str, delay_ms: int, **extra: str) -> str:
    job_id = delayed_job_id(keys.queue, token)
    payload = json.dumps({**FIELDS, "id": job_id, **extra}).encode()
    assert app.broker.call(enqueue_calls.schedule(keys, job_id, payload, delay_ms=delay_ms))[0]
    return job_id


def skip_fetch(app: Conveyor, keys: QueueKeys, consumer: str, count: int = 10) -> list[str]:
    """Entry ids fetch.lua delivers to run; those it sets apart as marked cancelled are
    ended with end_cancelled.lua, as the worker does."""
    got = app.broker.call(operations.fetch(keys, consumer, count))
    for d in got.marked:
        raw = d.fields.get(b"id")
        job_id = raw.decode() if raw else job_id_for(keys.queue, d.level, d.entry_id)
        unique = d.fields.get(b"unique", b"").decode()
        ended = end_cancelled(
            keys, consumer, d.level, d.entry_id, job_id, ttl_ms=TTL, unique_name=unique
        )
        assert app.broker.call(ended) in ("skipped", "cancelled")
    return [d.entry_id for d in got]


def pending(r: Any, keys: QueueKeys) -> list[str]:
    pel = r.xpending_range(keys.stream("normal"), GROUP, "-", "+", 1000)
    return [p["message_id"].decode() for p in pel]


def entry_of(job_id: str) -> str:
    return job_id.rsplit(":", 1)[1]


def record(r: Any, keys: QueueKeys, job_id: str) -> JobRecord | None:
    raw = r.get(keys.record(job_id))
    return decode_record(raw) if raw else None


def do_cancel(app: Conveyor, keys: QueueKeys, job_id: str) -> Any:
    return cancel(app.broker, keys, job_id, ttl_ms=TTL, reason="user asked")


def test_delayed_job_is_removed_and_ends_cancelled(app: Conveyor, keys: QueueKeys, r: Any) -> None:
    job_id = schedule(app, keys, "a1", 60_000)
    res = do_cancel(app, keys, job_id)
    assert res.outcome is CancelOutcome.CANCELLED and res.stopped
    assert r.zscore(keys.delayed, job_id) is None
    assert not r.hexists(keys.payloads, job_id)
    rec = record(r, keys, job_id)
    assert rec is not None and rec.state == "cancelled" and rec.reason == "user asked"
    assert rec.finished_at is not None and abs(rec.finished_at - r.time()[0] * 1000) < 5_000
    assert 0 < r.pttl(keys.record(job_id)) <= TTL
    # status.lua reads it from the record (job.py's JobState needs CANCELLED to show it)
    where = app.broker.call(operations.status(keys, job_id, None, None))
    assert where.place == "record" and where.record is not None
    assert decode_record(where.record).state == "cancelled"


def test_retrying_job_is_removed_from_backoff_and_not_promoted(
    app: Conveyor, keys: QueueKeys, r: Any
) -> None:
    job_id = enqueue(app, keys)
    (d,) = app.broker.call(operations.fetch(keys, "w1", 1))
    retry_record = encode_record(JobRecord(state="retrying", attempt=1))
    payload = json.dumps({**FIELDS, "id": job_id}).encode()
    assert app.broker.call(operations.retry(keys, "w1", d, job_id, payload, 0, retry_record))
    assert do_cancel(app, keys, job_id).outcome is CancelOutcome.CANCELLED
    assert app.broker.call(operations.promote(keys, [job_id])) == 0
    assert r.xlen(keys.stream("normal")) == 1  # only the first attempt's entry
    assert record(r, keys, job_id).state == "cancelled"  # type: ignore[union-attr]


def test_queued_job_keeps_its_entry_and_is_skipped_when_delivered(
    app: Conveyor, keys: QueueKeys, r: Any
) -> None:
    first = enqueue(app, keys)
    second = enqueue(app, keys)
    res = do_cancel(app, keys, first)
    assert res.outcome is CancelOutcome.WILL_SKIP and res.stopped
    # the entry stays until its turn, so the group's lag still counts it
    assert r.xlen(keys.stream("normal")) == 2
    assert r.sismember(keys.cancelled, first)
    assert record(r, keys, first).state == "cancelled"  # type: ignore[union-attr]
    delivered = skip_fetch(app, keys, "w1")
    assert delivered == [entry_of(second)]
    # the skipped entry is acked (no worker holds it), read past, and unmarked
    assert pending(r, keys) == delivered
    assert r.xinfo_groups(keys.stream("normal"))[0]["lag"] == 0
    assert r.scard(keys.cancelled) == 0
    assert record(r, keys, first).state == "cancelled"  # type: ignore[union-attr]


def test_promoted_job_is_skipped_by_its_id_field(app: Conveyor, keys: QueueKeys, r: Any) -> None:
    job_id = schedule(app, keys, "p1", 0)
    assert app.broker.call(operations.promote(keys, [job_id])) == 1
    assert do_cancel(app, keys, job_id).outcome is CancelOutcome.WILL_SKIP
    assert skip_fetch(app, keys, "w1") == []
    assert pending(r, keys) == [] and r.scard(keys.cancelled) == 0


def test_fetch_without_pending_cancels_delivers_everything(
    app: Conveyor, keys: QueueKeys, r: Any
) -> None:
    ids = [enqueue(app, keys) for _ in range(3)]
    assert skip_fetch(app, keys, "w1") == [entry_of(i) for i in ids]


def test_running_job_is_marked_read_by_the_beat_and_ended_not_retried(
    app: Conveyor, keys: QueueKeys, r: Any
) -> None:
    job_id = enqueue(app, keys)
    other = enqueue(app, keys)
    d, _ = app.broker.call(operations.fetch(keys, "w1", 2))
    res = do_cancel(app, keys, job_id)
    assert res.outcome is CancelOutcome.SIGNALLED and res.detail == "w1"
    assert not res.stopped
    assert record(r, keys, job_id) is None  # still running: status() says running
    assert app.broker.call(cancel_flags(keys, [job_id, other])) == {job_id}
    ended = end_cancelled(keys, "w1", "normal", d.entry_id, job_id, ttl_ms=TTL)
    assert app.broker.call(ended) == "cancelled"  # ended here: the worker tells the hooks
    assert r.xpending(keys.stream("normal"), GROUP)["pending"] == 1  # only `other`
    assert record(r, keys, job_id).state == "cancelled"  # type: ignore[union-attr]
    assert r.zcard(keys.delayed) == 0 and r.xlen(keys.dead) == 0
    assert app.broker.call(cancel_flags(keys, [job_id, other])) == set()
    assert do_cancel(app, keys, job_id).outcome is CancelOutcome.ALREADY_ENDED


def test_end_cancelled_by_a_worker_that_lost_the_entry_changes_nothing(
    app: Conveyor, keys: QueueKeys, r: Any
) -> None:
    job_id = enqueue(app, keys)
    (d,) = app.broker.call(operations.fetch(keys, "w1", 1))
    do_cancel(app, keys, job_id)
    r.xclaim(keys.stream("normal"), GROUP, "w2", 0, [d.entry_id])  # reclaimed elsewhere
    ended = end_cancelled(keys, "w1", "normal", d.entry_id, job_id, ttl_ms=TTL)
    assert app.broker.call(ended) == "lost"
    assert r.xpending(keys.stream("normal"), GROUP)["pending"] == 1
    assert record(r, keys, job_id) is None
    assert r.sismember(keys.cancelled, job_id)  # the new holder still sees the mark


def test_finished_jobs_are_left_alone_and_say_how_they_ended(
    app: Conveyor, keys: QueueKeys, r: Any
) -> None:
    done_id, dead_id, gone_id = enqueue(app, keys), enqueue(app, keys), enqueue(app, keys)
    d_done, d_dead, d_gone = app.broker.call(operations.fetch(keys, "w1", 3))
    done_rec = encode_record(JobRecord(state="done", result=1))
    c = [
        operations.Completion("normal", d_done.entry_id, done_id, done_rec, TTL),
        operations.Completion("normal", d_gone.entry_id, gone_id, done_rec, 0),
    ]
    assert app.broker.call(operations.complete(keys, "w1", c)) == []
    dead_rec = encode_record(JobRecord(state="dead", error="boom"))
    assert app.broker.call(
        operations.dead(keys, "w1", d_dead, dead_id, dead_rec, TTL, [("error", "boom")])
    )
    for job_id, state in ((done_id, "done"), (dead_id, "dead"), (gone_id, "record_expired")):
        before = r.get(keys.record(job_id))
        res = do_cancel(app, keys, job_id)
        assert (res.outcome, res.detail) == (CancelOutcome.ALREADY_ENDED, state)
        assert r.get(keys.record(job_id)) == before
    assert r.scard(keys.cancelled) == 0
    cancelled = schedule(app, keys, "c1", 60_000)
    do_cancel(app, keys, cancelled)
    res = do_cancel(app, keys, cancelled)
    assert (res.outcome, res.detail) == (CancelOutcome.ALREADY_ENDED, "cancelled")


def test_unknown_id_is_a_clear_error(app: Conveyor, keys: QueueKeys) -> None:
    with pytest.raises(JobNotFound, match="cannot cancel job q:n:1-0"):
        do_cancel(app, keys, "q:n:1-0")
    with pytest.raises(JobNotFound):
        do_cancel(app, keys, delayed_job_id("q", "nosuch"))
    with pytest.raises(ConfigurationError, match="not a Conveyor job id"):
        do_cancel(app, keys, "nonsense")


def test_cancel_then_fetch_never_runs_fetch_then_cancel_signals(
    app: Conveyor, keys: QueueKeys
) -> None:
    a = enqueue(app, keys)
    assert do_cancel(app, keys, a).outcome is CancelOutcome.WILL_SKIP
    assert skip_fetch(app, keys, "w1") == []
    b = enqueue(app, keys)
    assert skip_fetch(app, keys, "w1") == [entry_of(b)]
    assert do_cancel(app, keys, b).outcome is CancelOutcome.SIGNALLED


def test_cancels_racing_fetches_never_both_run_and_cancel_and_lose_none(
    app: Conveyor, keys: QueueKeys, redis_url: str, r: Any
) -> None:
    """A canceller and two fetchers on their own connections, bounded to 150 jobs: each job
    is either delivered once (and its cancel only signalled, for the worker to act on) or
    skipped unseen (and cancelled), never both, never neither."""
    ids = [enqueue(app, keys) for _ in range(150)]
    outcomes: dict[str, CancelOutcome] = {}
    delivered: list[str] = []
    lock = threading.Lock()

    def canceller() -> None:
        other = Conveyor(redis_url, namespace=app.namespace)
        try:
            for job_id in reversed(ids):  # meets the fetchers, which start at the front
                outcomes[job_id] = cancel(other.broker, keys, job_id, ttl_ms=TTL).outcome
        finally:
            other.close()

    def fetcher(name: str) -> None:
        other = Conveyor(redis_url, namespace=app.namespace)
        try:
            while r.xinfo_groups(keys.stream("normal"))[0]["lag"] > 0:
                got = skip_fetch(other, keys, name, 3)
                with lock:
                    delivered.extend(got)
        finally:
            other.close()

    threads = [threading.Thread(target=canceller)]
    threads += [threading.Thread(target=fetcher, args=(f"w{i}",)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
        assert not t.is_alive()
    running = {job_id for job_id in ids if entry_of(job_id) in delivered}
    assert len(delivered) == len(set(delivered)) == len(running)  # none delivered twice
    assert sorted(pending(r, keys)) == sorted(delivered)  # skipped ones are acked
    for job_id in ids:
        if job_id in running:  # delivered first, so only signalled
            assert outcomes[job_id] is CancelOutcome.SIGNALLED
        else:  # cancelled first, so never delivered, and ended
            assert outcomes[job_id] is CancelOutcome.WILL_SKIP
            assert record(r, keys, job_id).state == "cancelled"  # type: ignore[union-attr]
    # the marks left are exactly the running jobs' (their workers end them on the beat)
    assert {m.decode() for m in r.smembers(keys.cancelled)} == running
    # they met: some jobs were cancelled in time, some were already running
    assert 0 < len(running) < len(ids), len(running)


def test_cancel_frees_a_unique_key_held_until_done(app: Conveyor, keys: QueueKeys, r: Any) -> None:
    delayed = schedule(app, keys, "u1", 60_000, unique="report-7")
    r.set(keys.unique("report-7"), delayed)
    assert do_cancel(app, keys, delayed).outcome is CancelOutcome.CANCELLED
    assert not r.exists(keys.unique("report-7"))
    queued = enqueue(app, keys, unique="report-8")
    r.set(keys.unique("report-8"), queued)
    assert do_cancel(app, keys, queued).outcome is CancelOutcome.WILL_SKIP
    assert not r.exists(keys.unique("report-8"))


def test_cancel_keeps_a_unique_key_a_newer_job_took(app: Conveyor, keys: QueueKeys, r: Any) -> None:
    job_id = schedule(app, keys, "u2", 60_000, unique="k")
    r.set(keys.unique("k"), "q:n:9-9")  # the window ran out and another job took the key
    assert do_cancel(app, keys, job_id).outcome is CancelOutcome.CANCELLED
    assert r.get(keys.unique("k")) == b"q:n:9-9"


def test_end_cancelled_frees_the_unique_key(app: Conveyor, keys: QueueKeys, r: Any) -> None:
    job_id = enqueue(app, keys, unique="k2")
    r.set(keys.unique("k2"), job_id)
    (d,) = app.broker.call(operations.fetch(keys, "w1", 1))
    assert do_cancel(app, keys, job_id).outcome is CancelOutcome.SIGNALLED
    assert r.exists(keys.unique("k2"))  # still running: the key is its own until it ends
    call = end_cancelled(keys, "w1", "normal", d.entry_id, job_id, ttl_ms=TTL, unique_name="k2")
    assert app.broker.call(call) == "cancelled"
    assert not r.exists(keys.unique("k2"))


def test_cancel_async_twin(app: Conveyor, keys: QueueKeys, r: Any) -> None:
    job_id = schedule(app, keys, "as1", 60_000)

    async def go() -> CancelOutcome:
        try:
            return (await cancel_async(app.broker, keys, job_id, ttl_ms=TTL)).outcome
        finally:
            await app.broker.aclose()

    assert asyncio.run(go()) is CancelOutcome.CANCELLED
    assert record(r, keys, job_id).state == "cancelled"  # type: ignore[union-attr]


def test_zero_ttl_deletes_the_record_but_still_cancels(
    app: Conveyor, keys: QueueKeys, r: Any
) -> None:
    job_id = schedule(app, keys, "z1", 60_000)
    assert cancel(app.broker, keys, job_id, ttl_ms=0).outcome is CancelOutcome.CANCELLED
    assert not r.exists(keys.record(job_id)) and r.zcard(keys.delayed) == 0


def test_requeue_of_a_job_marked_while_running_ends_it_cancelled(
    app: Conveyor, keys: QueueKeys, r: Any
) -> None:
    """requeue.lua (a stopping worker hands back what it runs): a job marked cancelled after
    its worker's last beat is not handed back to run again; it ends cancelled."""
    job_id = enqueue(app, keys, unique="rq")
    r.set(keys.unique("rq"), job_id)
    (d,) = app.broker.call(operations.fetch(keys, "w1", 1))
    assert do_cancel(app, keys, job_id).outcome is CancelOutcome.SIGNALLED
    fields = {k.decode(): v for k, v in d.fields.items()}
    reply = app.broker.call(
        operations.requeue(
            keys, "w1", d, job_id, fields, cancelled_record=cancelled_record(), unique="rq"
        )
    )
    assert reply == "cancelled"
    assert r.xlen(keys.stream("normal")) == 1  # no copy added
    assert pending(r, keys) == []
    rec = record(r, keys, job_id)
    assert rec is not None and rec.state == "cancelled" and rec.finished_at
    assert r.scard(keys.cancelled) == 0 and not r.exists(keys.unique("rq"))


def test_requeue_of_an_unmarked_job_hands_it_back(app: Conveyor, keys: QueueKeys, r: Any) -> None:
    job_id = enqueue(app, keys)
    (d,) = app.broker.call(operations.fetch(keys, "w1", 1))
    fields = {k.decode(): v for k, v in d.fields.items()}
    new_id = app.broker.call(operations.requeue(keys, "w1", d, job_id, {**fields, "id": job_id}))
    assert new_id and new_id != "cancelled" and r.xlen(keys.stream("normal")) == 2


def test_the_cli_does_not_call_a_job_whose_record_expired_expired() -> None:
    """cancel.lua says `record_expired` for a job acked so long ago that its record's TTL
    passed: the CLI must not confuse it with the `expires` option's `expired` state."""
    gone = describe("q:n:1-0", CancelResult(CancelOutcome.ALREADY_ENDED, "record_expired"))
    assert "record expired" in gone and "result_ttl" in gone and "as " not in gone
    late = describe("q:n:1-0", CancelResult(CancelOutcome.ALREADY_ENDED, "expired"))
    assert late.endswith("already ended as expired")
