"""Trimming ready streams (lua/trim.lua, run by workers every Retention.trim_every): history is
cut only below the safe point, so no undelivered or pending job is ever deleted. A control
test shows what plain XTRIM MAXLEN does to the same backlog."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import redis

from conveyor import Conveyor, JobState, Leases, Retention, WorkerSettings
from conveyor.broker import operations
from tests.conftest import wait_until, worker_thread

GROUP = "conveyor"


def settings(**changes: Any) -> WorkerSettings:
    values: dict[str, Any] = {
        "concurrency": 10,
        "leases": Leases(timeout=5.0),
        "block_ms": 100,
        "promote_every": 0.05,
        "shutdown_grace": 5.0,
        "retention": Retention(keep_count=1000, trim_every=0.2),
    }
    values.update(changes)
    return WorkerSettings(**values)


def group_info(r: redis.Redis, stream: str) -> dict[str, Any]:
    [info] = [g for g in r.xinfo_groups(stream) if g["name"] in (GROUP, GROUP.encode())]
    return info


def create_groups(app: Conveyor) -> None:
    """Start and stop a worker: its consumer groups now exist at id 0, with nothing read."""
    with worker_thread(app, settings()):
        pass


# -- end to end ----------------------------------------------------------------------------------
def test_trimming_a_5000_job_backlog_never_drops_unfinished_jobs(
    app: Conveyor, r: redis.Redis, namespace: str
) -> None:
    ran: list[int] = []
    lock = threading.Lock()

    @app.task
    async def work(i: int) -> None:
        await asyncio.sleep(0.003)
        with lock:
            ran.append(i)

    stream = app.keys("default").stream("normal")
    create_groups(app)
    jobs = work.enqueue_many([(i,) for i in range(5000)])
    assert r.xlen(stream) == 5000
    assert group_info(r, stream)["pending"] == 0

    samples: list[tuple[int, int]] = []  # (xlen, jobs run) while the backlog drains
    with worker_thread(app, settings()) as w:
        deadline = time.monotonic() + 45
        while True:
            xlen = r.xlen(stream)
            with lock:
                done = len(ran)
            samples.append((xlen, done))
            # every job not yet run must still be in the stream (read `done` after xlen, so
            # this can only under-count what was unfinished when xlen was read)
            assert xlen >= 5000 - done, f"stream holds {xlen} entries but {5000 - done} unrun"
            if done >= 5000:
                break
            assert time.monotonic() < deadline, f"only {done} of 5000 jobs ran in 45 s"
            time.sleep(0.05)
        wait_until(lambda: r.xlen(stream) <= 1100, 10, "the finished history to be trimmed")
        counts = dict(w.counts)

    assert sorted(ran) == list(range(5000)), "a job was lost or ran twice"
    assert counts["done"] == 5000 and counts["dead"] == 0 and counts["lost"] == 0
    trimmed_mid_drain = [(x, d) for x, d in samples if x < 5000 and d < 4000]
    assert trimmed_mid_drain, f"no trim happened while the backlog drained: {samples[:20]}"
    final = r.xlen(stream)
    assert 1000 <= final <= 1100, final
    info = group_info(r, stream)
    assert info["pending"] == 0
    assert r.xlen(app.keys("default").dead) == 0
    # the newest jobs are still in the kept history; the oldest were trimmed after finishing
    assert jobs[-1].status() is JobState.DONE
    assert jobs[0].status() is JobState.DONE


def test_a_long_running_pending_job_holds_back_trimming(
    app: Conveyor, r: redis.Redis, namespace: str
) -> None:
    release = threading.Event()
    started = threading.Event()
    quick_ran: list[int] = []

    @app.task
    def stuck() -> str:
        started.set()
        release.wait(20)
        return "released"

    @app.task
    async def quick(i: int) -> int:
        quick_ran.append(i)
        return i

    stream = app.keys("default").stream("normal")
    create_groups(app)
    first = stuck.enqueue()
    quick.enqueue_many([(i,) for i in range(2000)])
    entry = first.id.split(":")[2]
    with worker_thread(app, settings(retention=Retention(keep_count=100, trim_every=0.1))):
        try:
            assert started.wait(10)
            wait_until(lambda: len(quick_ran) == 2000, 30, "every job but the stuck one to run")
            time.sleep(0.5)  # several trim passes
            assert group_info(r, stream)["pending"] == 1
            assert r.xrange(stream, entry, entry), "the pending job's entry was trimmed"
            assert r.xlen(stream) == 2001, "entries above the oldest pending one were trimmed"
            assert first.status() is JobState.RUNNING
        finally:
            release.set()
        assert first.result(timeout=10) == "released"
        wait_until(lambda: r.xlen(stream) == 100, 10, "trimming down to keep_count")


# -- control: what plain XTRIM would do ----------------------------------------------------------
def test_control_plain_xtrim_maxlen_deletes_undelivered_jobs(
    app: Conveyor, r: redis.Redis, namespace: str
) -> None:
    ran: list[int] = []

    @app.task
    def work(i: int) -> None:
        ran.append(i)

    stream = app.keys("default").stream("normal")
    create_groups(app)
    jobs = work.enqueue_many([(i,) for i in range(5000)])
    first_entry = jobs[0].id.split(":")[2]
    assert group_info(r, stream)["pending"] == 0
    assert group_info(r, stream)["last-delivered-id"] in (b"0-0", "0-0")

    deleted = r.xtrim(stream, maxlen=1000, approximate=False)

    assert deleted == 4000
    assert r.xlen(stream) == 1000
    # these entries were never delivered to anyone, and now they are gone for good
    assert group_info(r, stream)["last-delivered-id"] in (b"0-0", "0-0")
    assert r.xrange(stream, first_entry, first_entry) == []
    assert jobs[0].status() is JobState.UNKNOWN
    assert jobs[3999].status() is JobState.UNKNOWN
    assert jobs[4000].status() is JobState.QUEUED
    with worker_thread(app, settings()):
        wait_until(lambda: len(ran) >= 1000, 20, "the surviving jobs to run")
        time.sleep(0.3)
    assert sorted(ran) == list(range(4000, 5000)), "plain XTRIM lost the 4000 oldest jobs"


# -- the trim script, called directly ------------------------------------------------------------
def trim(app: Conveyor, keep_count: int, keep_ms: int = 0, cap: int = 10_000) -> int:
    keys = app.keys("default")
    return app.broker.call(operations.trim(keys, "normal", keep_count, keep_ms, cap))


def fill(r: redis.Redis, stream: str, n: int) -> list[bytes]:
    return [r.xadd(stream, {"task": "t", "args": f"[{i}]", "kwargs": "{}"}) for i in range(n)]


def deliver(r: redis.Redis, stream: str, count: int, consumer: str = "c1") -> list[bytes]:
    reply = r.xreadgroup(GROUP, consumer, {stream: ">"}, count=count)
    if not reply:
        return []
    entries = reply[stream.encode()][0] if isinstance(reply, dict) else reply[0][1]
    return [eid for eid, _ in entries]


def ids_in(r: redis.Redis, stream: str) -> list[bytes]:
    return [eid for eid, _ in r.xrange(stream)]


def test_trim_without_any_group_trims_nothing(app: Conveyor, r: redis.Redis) -> None:
    stream = app.keys("default").stream("normal")
    assert trim(app, 10) == 0  # no stream at all
    fill(r, stream, 100)
    assert trim(app, 10) == 0
    assert trim(app, 0) == 0
    assert trim(app, 0, keep_ms=1) == 0
    assert r.xlen(stream) == 100


def test_trim_with_a_group_that_read_nothing_trims_nothing(app: Conveyor, r: redis.Redis) -> None:
    stream = app.keys("default").stream("normal")
    fill(r, stream, 100)
    r.xgroup_create(stream, GROUP, id="0")
    assert trim(app, 10) == 0
    assert trim(app, 0) == 0
    assert r.xlen(stream) == 100


def test_trim_keeps_pending_entries_and_everything_after_them(
    app: Conveyor, r: redis.Redis
) -> None:
    stream = app.keys("default").stream("normal")
    ids = fill(r, stream, 100)
    r.xgroup_create(stream, GROUP, id="0")
    delivered = deliver(r, stream, 50)
    assert delivered == ids[:50]

    assert trim(app, 10) == 0, "an entry at or after the oldest pending one was trimmed"
    assert r.xlen(stream) == 100

    r.xack(stream, GROUP, *ids[:30])
    assert trim(app, 10) == 30
    assert ids_in(r, stream) == ids[30:]
    # the 20 still pending and the 50 never delivered are all there
    pending = r.xpending_range(stream, GROUP, "-", "+", 100)
    assert [p["message_id"] for p in pending] == ids[30:50]
    assert trim(app, 10) == 0


def test_trim_respects_a_pending_entry_below_acked_ones(app: Conveyor, r: redis.Redis) -> None:
    stream = app.keys("default").stream("normal")
    ids = fill(r, stream, 100)
    r.xgroup_create(stream, GROUP, id="0")
    deliver(r, stream, 100)
    r.xack(stream, GROUP, *ids[:5], *ids[6:])  # all but ids[5]
    assert trim(app, 10) == 5
    assert ids_in(r, stream)[0] == ids[5]
    r.xack(stream, GROUP, ids[5])
    assert trim(app, 10) == 85
    assert ids_in(r, stream) == ids[90:]


def test_trim_removes_acked_entries_beyond_keep_count(app: Conveyor, r: redis.Redis) -> None:
    stream = app.keys("default").stream("normal")
    ids = fill(r, stream, 100)
    r.xgroup_create(stream, GROUP, id="0")
    deliver(r, stream, 100)
    r.xack(stream, GROUP, *ids)
    assert trim(app, 10) == 90
    assert ids_in(r, stream) == ids[90:]
    assert trim(app, 10) == 0


def test_trim_keeps_undelivered_entries_even_with_no_count_rule(
    app: Conveyor, r: redis.Redis
) -> None:
    stream = app.keys("default").stream("normal")
    ids = fill(r, stream, 100)
    r.xgroup_create(stream, GROUP, id="0")
    deliver(r, stream, 40)
    r.xack(stream, GROUP, *ids[:40])
    assert trim(app, 0) == 40
    assert ids_in(r, stream) == ids[40:]
    assert trim(app, 0) == 0


def test_trim_deletes_at_most_cap_entries_per_call(app: Conveyor, r: redis.Redis) -> None:
    stream = app.keys("default").stream("normal")
    ids = fill(r, stream, 100)
    r.xgroup_create(stream, GROUP, id="0")
    deliver(r, stream, 100)
    r.xack(stream, GROUP, *ids)
    assert trim(app, 0, cap=25) == 25
    assert ids_in(r, stream) == ids[25:]
    assert trim(app, 10, cap=25) == 25
    assert ids_in(r, stream) == ids[50:]
    assert trim(app, 10, cap=1000) == 40
    assert ids_in(r, stream) == ids[90:]


def test_trim_by_age_keeps_young_history(app: Conveyor, r: redis.Redis) -> None:
    stream = app.keys("default").stream("normal")
    old = [r.xadd(stream, {"task": "t", "args": "[]", "kwargs": "{}"}, id=f"{i}-0") for i in (1, 2)]
    young = fill(r, stream, 10)
    r.xgroup_create(stream, GROUP, id="0")
    deliver(r, stream, 100)
    r.xack(stream, GROUP, *old, *young)
    assert trim(app, 0, keep_ms=60_000) == 2
    assert ids_in(r, stream) == young
    assert trim(app, 0, keep_ms=60_000) == 0


def test_trim_honours_the_slowest_of_several_groups(app: Conveyor, r: redis.Redis) -> None:
    stream = app.keys("default").stream("normal")
    ids = fill(r, stream, 100)
    r.xgroup_create(stream, GROUP, id="0")
    r.xgroup_create(stream, "analytics", id="0")
    deliver(r, stream, 100)
    r.xack(stream, GROUP, *ids)
    assert trim(app, 10) == 0, "entries the second group never read were trimmed"
    reply = r.xreadgroup("analytics", "a1", {stream: ">"}, count=60)
    assert reply
    r.xack(stream, "analytics", *ids[:60])
    assert trim(app, 10) == 60
    assert ids_in(r, stream) == ids[60:]
