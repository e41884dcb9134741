"""Chord members that end without a result (cancelled, expired, dead on a lost lease): the
chord hears of it exactly when the member really ends, and its handle never waits for ever."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import redis

from conveyor import Conveyor, JobCancelled, JobFailed, JobState, chain, chord
from conveyor.broker.operations import Delivery
from conveyor.cancellation import CancelOutcome, cancel_call
from conveyor.errors import JobNotFound
from conveyor.keys import GROUP
from conveyor.wire import decode_fields
from conveyor.worker.executor import Outcome
from conveyor.worker.transitions import Transitions
from conveyor.workflows.handles import MEMBER_FAILED
from tests.conftest import fast, wait_until, worker_thread


def _merge(app: Conveyor, queue: str) -> Any:
    @app.task(queue=queue)
    def merge(values: list[Any]) -> list[Any]:
        return values

    return merge


@pytest.mark.parametrize("callback_queue", ["merge", "members"])
def test_a_member_cancelled_while_queued_fails_the_chord_instead_of_hanging(
    app: Conveyor, callback_queue: str
) -> None:
    @app.task(queue="members")
    def member(i: int) -> int:
        return i

    merge = _merge(app, callback_queue)
    handle = chord([member.s(i) for i in range(3)], merge.s()).enqueue()
    assert handle.members[1].cancel().stopped
    with worker_thread(app, fast()), pytest.raises(JobFailed) as failed:
        handle.result(timeout=10)
    assert failed.value.job_id == handle.callback.id
    assert "member 2 of 3" in (failed.value.error or "")
    assert "was cancelled" in (failed.value.error or "")
    assert handle.callback.info().reason == MEMBER_FAILED


@pytest.mark.parametrize("callback_queue", ["merge", "members"])
def test_include_calls_the_callback_with_a_cancelled_members_error_in_place(
    app: Conveyor, callback_queue: str
) -> None:
    @app.task(queue="members")
    def member(i: int) -> int:
        return i

    merge = _merge(app, callback_queue)
    handle = chord([member.s(i) for i in range(3)], merge.s(), on_error="include").enqueue()
    handle.members[1].cancel()
    with worker_thread(app, fast()):
        got = handle.result(timeout=10)
    assert got[0] == 0 and got[2] == 2
    assert got[1]["reason"] == "cancelled" and got[1]["job_id"] == handle.members[1].id


@pytest.mark.parametrize("callback_queue", ["merge", "members"])
@pytest.mark.parametrize("on_error", ["fail", "include"])
def test_expired_members_end_the_chord(app: Conveyor, on_error: str, callback_queue: str) -> None:
    @app.task(queue="members", expires=0.2)
    def member(i: int) -> int:
        return i

    merge = _merge(app, callback_queue)
    handle = chord([member.s(i) for i in range(3)], merge.s(), on_error=on_error).enqueue()  # type: ignore[arg-type]
    time.sleep(0.4)  # no worker yet: the members wait past their expires
    with worker_thread(app, fast()):
        if on_error == "fail":
            with pytest.raises(JobFailed, match="was expired"):
                handle.result(timeout=10)
        else:
            got = handle.result(timeout=10)
            assert [v["reason"] for v in got] == ["expired"] * 3
    assert [m.status() for m in handle.members] == [JobState.EXPIRED] * 3


def test_a_member_cancelled_while_retrying_reaches_its_chord(app: Conveyor) -> None:
    """A delayed member cancelled from the delayed set: cancel.lua hands its entry, marked,
    to a worker, whose end_cancelled tells the chord (on another queue)."""

    @app.task(queue="members", retries=3, backoff=60)
    def member(i: int) -> int:
        if i == 1:
            raise ValueError("flaky")
        return i

    merge = _merge(app, "merge")
    handle = chord([member.s(i) for i in range(2)], merge.s(), on_error="include").enqueue()
    with worker_thread(app, fast()):
        wait_until(lambda: handle.members[1].status() is JobState.RETRYING, 10, "member 2 retrying")
        assert handle.members[1].cancel().stopped
        got = handle.result(timeout=10)
    assert got[0] == 0
    assert got[1]["reason"] == "cancelled" and got[1]["job_id"] == handle.members[1].id


def test_a_member_cancelled_while_running_reaches_its_chord(app: Conveyor) -> None:
    started: list[int] = []

    @app.task(queue="members")
    async def member(i: int) -> int:
        if i == 0:
            started.append(i)
            await asyncio.sleep(60)
        return i

    merge = _merge(app, "merge")
    handle = chord([member.s(i) for i in range(2)], merge.s(), on_error="include").enqueue()
    with worker_thread(app, fast()):
        wait_until(lambda: bool(started), 10, "member 1 running")
        handle.members[0].cancel()
        got = handle.result(timeout=10)
    assert got[0]["reason"] == "cancelled" and got[1] == 1


def test_a_chord_whose_callback_is_never_added_raises_instead_of_waiting(
    app: Conveyor, r: redis.Redis
) -> None:
    """Every member ended but no callback will come (here: its hash was deleted, so no
    report was taken): result() raises rather than waits for ever."""

    @app.task(queue="members")
    def member(i: int) -> int:
        return i

    merge = _merge(app, "merge")
    handle = chord([member.s(i) for i in range(2)], merge.s()).enqueue()
    r.delete(app.keys("merge").chord(handle.id))
    with worker_thread(app, fast()), pytest.raises(JobNotFound, match="never added"):
        handle.result()  # no timeout: it must end by itself
    assert handle.callback.status() is JobState.UNKNOWN


@pytest.mark.parametrize("callback_queue", ["merge", "members"])
@pytest.mark.parametrize("on_error", ["fail", "include"])
def test_a_worker_that_lost_its_lease_writes_nothing_into_the_chord(
    redis_url: str, namespace: str, r: redis.Redis, callback_queue: str, on_error: str
) -> None:
    app = Conveyor(redis_url, namespace=namespace)

    @app.task(queue="members", retries=0)
    def member(i: int) -> int:
        return i * 10

    merge = _merge(app, callback_queue)
    handle = chord([member.s(i) for i in range(2)], merge.s(), on_error=on_error).enqueue()  # type: ignore[arg-type]
    k = app.keys("members")
    stream = k.stream("normal")
    r.xgroup_create(stream, GROUP, id="0", mkstream=True)
    ((_, [(entry_id, fields)]),) = r.xreadgroup(GROUP, "stale-A", {stream: ">"}, count=1)
    r.xclaim(stream, GROUP, "other-B", 0, [entry_id])  # A's lease lapsed; B has it now
    d = Delivery("members", "normal", entry_id.decode(), fields, 1)
    env = decode_fields(fields)
    stale = Conveyor(redis_url, namespace=namespace)
    counts: dict[str, int] = {}
    t = Transitions(stale.broker, {"members": k}, "stale-A", None, counts)
    try:
        asyncio.run(t.dead(d, env.id or "", env, "failed", "stale worker's failure"))
    finally:
        stale.close()
    assert counts == {"lost": 1}
    chord_key = app.keys(callback_queue).chord(handle.id)
    assert sorted(r.hkeys(chord_key)) == [b"cb"]  # nothing written into the chord
    assert handle.callback.status() is JobState.UNKNOWN  # not recorded dead either
    try:
        with worker_thread(app, fast()):  # reclaims member 0 after B's lease, runs it
            assert handle.result(timeout=10) == [0, 10]
    finally:
        app.close()


def test_a_member_marked_cancelled_when_it_fails_tells_its_chord(
    app: Conveyor, r: redis.Redis
) -> None:
    """retry.lua ends a failed job that a cancel marked while it ran: its chord is told."""

    @app.task(queue="members", retries=2)
    def member(i: int) -> int:
        return i

    merge = _merge(app, "merge")
    handle = chord([member.s(i) for i in range(2)], merge.s(), on_error="include").enqueue()
    k = app.keys("members")
    stream = k.stream("normal")
    r.xgroup_create(stream, GROUP, id="0", mkstream=True)
    ((_, [(entry_id, fields)]),) = r.xreadgroup(GROUP, "w1", {stream: ">"}, count=1)
    env = decode_fields(fields)
    r.sadd(k.cancelled, env.id or "")  # job.cancel() found it running
    d = Delivery("members", "normal", entry_id.decode(), fields, 1)
    counts: dict[str, int] = {}
    t = Transitions(app.broker, {"members": k}, "w1", None, counts)
    asyncio.run(t.failed(d, env, member, env.id or "", Outcome(False, error="ValueError: x")))
    assert counts == {"cancelled": 1}
    slot = r.hget(app.keys("merge").chord(handle.id), "e0")
    assert slot is not None and b'"reason":"cancelled"' in slot


def test_a_chord_whose_members_cannot_all_be_added_leaves_no_hash(
    app: Conveyor, r: redis.Redis
) -> None:
    @app.task(queue="good")
    def good(i: int) -> int:
        return i

    @app.task(queue="broken")
    def bad(i: int) -> int:
        return i

    merge = _merge(app, "merge")
    r.set(app.keys("broken").stream("normal"), "not a stream")  # its XADD fails
    with pytest.raises(Exception, match="WRONGTYPE"):
        chord([good.s(1), bad.s(2)], merge.s()).enqueue()
    assert not r.keys(app.keys("merge").chord("*"))


def test_cancel_stops_a_running_chain_and_every_step_after_it(app: Conveyor) -> None:
    started: list[str] = []

    @app.task(queue="first")
    async def slow(x: int) -> int:
        started.append("slow")
        await asyncio.sleep(60)
        return x

    @app.task(queue="second")
    def after(x: int) -> int:
        started.append("after")
        return x

    handle = chain(slow.s(1), after.s(), after.s()).enqueue()
    with worker_thread(app, fast()):
        wait_until(lambda: bool(started), 10, "step 1 running")
        outcomes = [c.outcome for c in handle.cancel("no longer needed")]
        assert outcomes == [
            CancelOutcome.SIGNALLED,
            CancelOutcome.CANCELLED,
            CancelOutcome.CANCELLED,
        ]
        with pytest.raises(JobCancelled):
            handle.result(timeout=10)
        wait_until(lambda: handle.jobs[0].status() is JobState.CANCELLED, 10, "step 1 ended")
    assert started == ["slow"]
    assert [j.status() for j in handle.jobs] == [JobState.CANCELLED] * 3


@pytest.mark.parametrize("next_queue", ["default", "other"])
def test_a_step_cancelled_before_it_was_added_is_never_added(
    app: Conveyor, r: redis.Redis, next_queue: str
) -> None:
    """The step before it ends well, and its handoff (same queue: in the ack; another
    queue: forwarded) adds nothing: the workflow stays cancelled."""
    go = f"{app.keys('default').prefix}go"

    @app.task
    def gate(x: int) -> int:
        wait_until(lambda: bool(r.get(go)), 10, "go")
        return x

    @app.task(queue=next_queue)
    def step(x: int) -> int:
        return x + 1

    handle = chain(gate.s(1), step.s()).enqueue()
    first, second = handle.jobs
    with worker_thread(app, fast()):
        wait_until(lambda: first.status() is JobState.RUNNING, 10, "gate running")
        call = cancel_call(second._keys, second.id, ttl_ms=60_000, before_added=True)
        app.broker.call(call)
        r.set(go, 1)  # step 1 ends well, after the cancel
        wait_until(lambda: first.status() is JobState.DONE, 10, "gate done")
        with pytest.raises(JobCancelled):
            handle.result(timeout=10)
    assert second.status() is JobState.CANCELLED
    gates = 1 if next_queue == "default" else 0  # the gate's own entry (acked) is there
    assert r.xlen(app.keys(next_queue).stream("normal")) == gates


def test_cancel_of_a_chord_cancels_its_members_and_callback(app: Conveyor, r: redis.Redis) -> None:
    @app.task(queue="members")
    def member(i: int) -> int:
        return i

    merge = _merge(app, "merge")
    handle = chord([member.s(i) for i in range(3)], merge.s(), on_error="include").enqueue()
    outcomes = [c.outcome for c in handle.cancel()]
    assert outcomes == [CancelOutcome.WILL_SKIP] * 3 + [CancelOutcome.CANCELLED]
    assert not r.exists(app.keys("merge").chord(handle.id))
    with worker_thread(app, fast()), pytest.raises(JobCancelled):
        handle.result(timeout=10)
    assert r.xlen(app.keys("merge").stream("normal")) == 0
    assert handle.callback.status() is JobState.CANCELLED
