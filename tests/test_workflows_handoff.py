"""The handoff scripts on their own: a repeat adds nothing, a lost lease hands nothing on."""

from __future__ import annotations

from importlib import resources

import redis

from conveyor import Conveyor
from conveyor.broker import operations, workflow_calls
from conveyor.broker.operations import Completion
from conveyor.broker.workflow_calls import ChordReport, NextStep
from conveyor.keys import GROUP
from conveyor.workflows.flow import Flow
from conveyor.workflows.handoff import gather
from conveyor.workflows.launch import CHORD_TTL_MS


def _step(app: Conveyor, queue: str, job_id: str) -> NextStep:
    k = app.keys(queue)
    fields = ("version", "1", "task", "t", "args", "[1]", "kwargs", "{}", "id", job_id)
    return NextStep(k.stream("normal"), k.record(job_id), "normal", fields)


def test_a_forwarded_step_is_added_once_however_often_it_is_forwarded(
    app: Conveyor, r: redis.Redis
) -> None:
    job_id = "next:d:abc-s1"
    step = _step(app, "next", job_id)
    marker = app.keys("next").handoff(job_id)
    assert app.broker.call(workflow_calls.forward_step(marker, step, 60_000)) is True
    assert app.broker.call(workflow_calls.forward_step(marker, step, 60_000)) is False
    assert r.xlen(step.stream) == 1
    assert b'"state":"queued"' in (r.get(step.record) or b"")


def test_a_chord_adds_its_callback_once_when_its_last_slot_fills(
    app: Conveyor, r: redis.Redis
) -> None:
    k = app.keys("cb")
    cb = _step(app, "cb", "cb:d:w-s1")
    app.broker.call(
        workflow_calls.chord_open(k.chord("w"), b'["task","merge","id","cb:d:w-s1"]', 60_000)
    )

    def report(i: int) -> int:
        rep = ChordReport(k.chord("w"), i, b"%d" % i, 3, cb.stream, cb.record, "normal")
        return app.broker.call(workflow_calls.chord_report(rep))

    assert [report(0), report(0), report(2)] == [1, 0, 1]
    assert r.xlen(cb.stream) == 0
    assert report(1) == 2 and report(1) == 0 and report(2) == 0
    (entry,) = r.xrange(cb.stream)
    assert entry[1][b"task"] == b"merge"
    assert r.hmget(k.chord("w"), "0", "1", "2") == [b"0", b"1", b"2"]
    # a report to a chord that is gone (expired) creates nothing
    gone = ChordReport(k.chord("gone"), 0, b"1", 1, cb.stream, cb.record, "normal")
    assert app.broker.call(workflow_calls.chord_report(gone)) == 0
    assert not r.exists(k.chord("gone"))


def test_the_ack_adds_the_next_step_only_for_an_entry_it_still_owns(
    app: Conveyor, r: redis.Redis
) -> None:
    k = app.keys("default")
    stream = k.stream("normal")
    r.xgroup_create(stream, GROUP, id="0", mkstream=True)
    mine = r.xadd(stream, {"task": "a"}).decode()
    stolen = r.xadd(stream, {"task": "b"}).decode()
    r.xreadgroup(GROUP, "w1", {stream: ">"}, count=2)
    r.xclaim(stream, GROUP, "w2", 0, [stolen])
    done = [
        Completion(
            "normal",
            e,
            f"default:d:{n}-s0",
            b'{"state":"done"}',
            60_000,
            handoffs=(_step(app, "default", f"default:d:{n}-s1"),),
        )
        for n, e in (("mine", mine), ("stolen", stolen))
    ]
    rejected = app.broker.call(operations.complete(k, "w1", done))
    assert rejected == [1]
    added = [f[b"id"] for _, f in r.xrange(stream) if b"id" in f]
    assert added == [b"default:d:mine-s1"]
    assert r.exists(k.record("default:d:mine-s1")) and not r.exists(k.record("default:d:stolen-s1"))


def test_a_result_replaces_an_error_in_its_slot_until_the_callback_is_added(
    app: Conveyor, r: redis.Redis
) -> None:
    """An error (on_error="include") is kept apart, so a re-run's success replaces one a
    stale worker wrote; once the callback was added with it, nothing changes any more."""
    k = app.keys("cb")
    cb = _step(app, "cb", "cb:d:w-s1")
    app.broker.call(
        workflow_calls.chord_open(k.chord("w"), b'["task","merge","id","cb:d:w-s1"]', 60_000)
    )

    def report(i: int, value: bytes, error: bool = False) -> int:
        rep = ChordReport(k.chord("w"), i, value, 2, cb.stream, cb.record, "normal", error)
        return app.broker.call(workflow_calls.chord_report(rep))

    assert report(0, b'"err0"', error=True) == 1
    assert report(0, b'"err0 again"', error=True) == 0
    assert report(0, b"0") == 1  # the success takes the slot, the error goes
    assert r.hgetall(k.chord("w")).keys() == {b"cb", b"0"}
    assert report(1, b'"err1"', error=True) == 2  # the last slot: callback added
    assert report(1, b"1") == 0  # too late: the callback was added with the error
    flow = Flow(id="w", step=1, steps=2, gather=2)
    assert app.broker.call(gather(k, flow)) == [b"0", b'"err1"']
    assert r.xlen(cb.stream) == 1


def test_each_report_renews_the_chords_lifetime(app: Conveyor, r: redis.Redis) -> None:
    """A chord lives CHORD_TTL_MS from its latest news (a report, a member failed for good:
    a dead member replayed late included), not a fixed time from its start."""
    k = app.keys("cb")
    cb = _step(app, "cb", "cb:d:w-s1")
    app.broker.call(
        workflow_calls.chord_open(k.chord("w"), b'["task","merge","id","cb:d:w-s1"]', CHORD_TTL_MS)
    )
    r.pexpire(k.chord("w"), 5_000)  # most of its lifetime gone
    rep = ChordReport(k.chord("w"), 0, b"0", 2, cb.stream, cb.record, "normal")
    assert app.broker.call(workflow_calls.chord_report(rep)) == 1
    assert r.pttl(k.chord("w")) > CHORD_TTL_MS - 60_000
    r.pexpire(k.chord("w"), 5_000)
    record = b'{"state":"dead","reason":"chord_member_failed"}'
    failed = workflow_calls.chord_failed(k.chord("w"), 1, cb.record, record, 60_000, k.done_channel)
    assert app.broker.call(failed) is True
    assert r.pttl(k.chord("w")) > CHORD_TTL_MS - 60_000
    lua = (resources.files("conveyor") / "lua" / "includes" / "workflow.lua").read_text()
    assert f"local CHORD_TTL_MS = {CHORD_TTL_MS}\n" in lua
