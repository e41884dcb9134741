"""Global rate and concurrency limits (conveyor.limits) against a real Redis.

The gates are driven as the worker will drive them (tests/limits_driver.py), from several
OS processes at once; the worker itself is not involved.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from conveyor import Conveyor
from conveyor.broker import operations
from conveyor.keys import GROUP, QueueKeys
from conveyor.limits import (
    ConcurrencyLimit,
    Limits,
    RateLimit,
    leases_key,
    rate_key,
    release,
    renew,
    waiters_key,
)
from conveyor.limits.concurrency import Held
from tests import limits_driver as driver

SPAWN = multiprocessing.get_context("spawn")


@pytest.fixture
def keys(app: Conveyor) -> QueueKeys:
    return driver.setup(app)


def now_ms(r: redis.Redis) -> int:
    s, us = r.time()
    return int(s) * 1000 + int(us) // 1000


def deliver(app: Conveyor, keys: QueueKeys, consumer: str, n: int = 1) -> list[Any]:
    out = app.broker.call(operations.fetch(keys, consumer, n))
    assert len(out) == n
    return out


def run_in_processes(target: Any, args: tuple[Any, ...], count: int) -> list[Any]:
    with SPAWN.Pool(count) as pool:
        pending = [pool.apply_async(target, args) for _ in range(count)]
        return [p.get(timeout=60) for p in pending]


def window_counts(times: list[int], start: int, end: int, width: int = 2000) -> list[int]:
    """Admissions in each full ``width`` window from ``start + width`` (the first skipped)."""
    counts = []
    lo = start + width
    while lo + width <= end:
        counts.append(sum(lo <= t < lo + width for t in times))
        lo += width
    return counts


# -- rate ------------------------------------------------------------------------------------
def test_rate_50_per_second_holds_across_three_processes(app: Conveyor, keys: QueueKeys) -> None:
    driver.add_jobs(app, keys, "t", ["all"] * 700)
    results = run_in_processes(driver.drive_rate, (app.url, app.namespace, "50/s", 7.0), 3)
    times = sorted(t for res in results for t in res["admitted"].get("all", []))
    end = min(res["end_ms"] for res in results)
    counts = window_counts(times, times[0], end)
    assert len(counts) >= 2, counts
    for c in counts:
        assert 90 <= c <= 110, counts
    # every process admitted some: the limit is global, not per process
    assert all(res["admitted"].get("all") for res in results)
    # a parked job passes the gate twice, an admitted one once: no polling
    gates = sum(res["gates"] for res in results)
    assert gates <= 2 * 700, gates


def test_two_keys_at_20_per_second_are_limited_independently(
    app: Conveyor, keys: QueueKeys
) -> None:
    driver.add_jobs(app, keys, "t", ["a", "b"] * 200)
    results = run_in_processes(driver.drive_rate, (app.url, app.namespace, "20/s", 6.5), 3)
    end = min(res["end_ms"] for res in results)
    for tenant in ("a", "b"):
        times = sorted(t for res in results for t in res["admitted"].get(tenant, []))
        counts = window_counts(times, times[0], end)
        assert len(counts) >= 2, (tenant, counts)
        for c in counts:
            assert 36 <= c <= 44, (tenant, counts)


def test_a_limited_job_is_parked_until_its_slot_without_counting_an_attempt(
    app: Conveyor, keys: QueueKeys, r: redis.Redis
) -> None:
    limit = Limits(rate=RateLimit.parse("2/s"))
    driver.add_jobs(app, keys, "t", ["x", "x"])
    first, second = deliver(app, keys, "w", 2)
    id1, p1, rec1, _ = driver.parking(first)
    id2, p2, rec2, _ = driver.parking(second)
    before = now_ms(r)
    a1 = app.broker.call(
        limit.gate(keys, "w", first, id1, p1, rec1, task="t", lease_ms=0, rate_key_value="x")
    )
    a2 = app.broker.call(
        limit.gate(keys, "w", second, id2, p2, rec2, task="t", lease_ms=0, rate_key_value="x")
    )
    assert a1.outcome == "run"
    assert a2.outcome == "wait" and before + 400 <= a2.at_ms <= now_ms(r) + 501
    # parked in one step: acked, in the delayed set at the slot, same attempt, record says so
    assert r.xpending(keys.stream("normal"), GROUP)["pending"] == 1  # only the admitted one
    assert r.zscore(keys.delayed, id2) == a2.at_ms
    parked = json.loads(r.hget(keys.payloads, id2) or b"{}")
    assert parked.get("attempt", "1") == "1"  # still its first attempt (left out while 1)
    assert json.loads(r.get(keys.record(id2)) or b"{}")["state"] == "scheduled"
    assert r.zscore(rate_key(keys, "t", "x"), id2) == a2.at_ms  # the slot is reserved
    # promoted at its slot, it runs without taking another slot
    driver.add_jobs(app, keys, "t", ["x"])
    time.sleep(max(0, a2.at_ms - now_ms(r)) / 1000 + 0.01)
    driver.promote_due(app, keys)
    back, newcomer = deliver(app, keys, "w", 2)
    if driver.parking(back)[0] != id2:
        back, newcomer = newcomer, back
    assert app.broker.call(
        limit.gate(keys, "w", back, id2, p2, rec2, task="t", lease_ms=0, rate_key_value="x")
    ).run
    n_id, n_p, n_rec, _ = driver.parking(newcomer)
    late = app.broker.call(
        limit.gate(keys, "w", newcomer, n_id, n_p, n_rec, task="t", lease_ms=0, rate_key_value="x")
    )
    assert late.outcome == "wait" and late.at_ms >= a2.at_ms + 500


def test_a_gate_for_an_entry_this_consumer_lost_changes_nothing(
    app: Conveyor, keys: QueueKeys, r: redis.Redis
) -> None:
    limit = Limits(rate=RateLimit.parse("1/h"))
    conc = Limits(concurrency=ConcurrencyLimit.parse(1))
    driver.add_jobs(app, keys, "t", ["x"])
    (d,) = deliver(app, keys, "w1")
    r.xclaim(keys.stream("normal"), GROUP, "w2", 0, [d.entry_id])  # another worker has it
    job_id, payload, record, _ = driver.parking(d)
    lost = app.broker.call(limit.gate(keys, "w1", d, job_id, payload, record, task="t", lease_ms=0))
    assert lost.outcome == "lost"
    taken = app.broker.call(
        conc.gate(keys, "w1", d, job_id, payload, record, task="t", lease_ms=1000)
    )
    assert taken.outcome == "lost"
    assert not r.exists(rate_key(keys, "t"), leases_key(keys, "t"), keys.delayed)
    assert r.xpending(keys.stream("normal"), GROUP)["pending"] == 1


def test_unsafe_keys_stay_under_the_queue_hash_tag(keys: QueueKeys) -> None:
    key = rate_key(keys, "t", "}{evil:*" * 40)
    assert key.startswith(keys.prefix + "rate:t:#") and len(key) < len(keys.prefix) + 50
    assert leases_key(keys, "t", "w") != waiters_key(keys, "t")


# -- concurrency -----------------------------------------------------------------------------
def test_concurrency_3_across_3_processes_of_10_slots_is_never_exceeded(
    app: Conveyor, keys: QueueKeys
) -> None:
    driver.add_jobs(app, keys, "c", ["all"] * 45)
    args = (app.url, app.namespace, 3, 10, 0.1, 45, 2000)
    results = run_in_processes(driver.drive_concurrency, args, 3)
    bodies = [b for res in results for b in res["bodies"]]
    assert len(bodies) == 45
    events = sorted([(s, 1) for s, _ in bodies] + [(e, -1) for _, e in bodies])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    assert peak == 3
    # parked jobs are woken by releases, not polled: a bounded number of gate calls per job
    gates = sum(res["gates"] for res in results)
    assert gates <= 45 * 6, gates


#: the deliveries behind held_three's leases, by job id
HOLDER_DELIVERIES: dict[str, Any] = {}


@pytest.fixture
def held_three(app: Conveyor, keys: QueueKeys) -> Iterator[list[str]]:
    """Three jobs of task 'c' holding all three leases (lease 600 ms), and a fourth delivered."""
    driver.add_jobs(app, keys, "c", ["x"] * 4)
    conc = Limits(concurrency=ConcurrencyLimit.parse(3, retry_ms=10_000))
    ids = []
    HOLDER_DELIVERIES.clear()
    for d in deliver(app, keys, "holder", 3):
        job_id, payload, record, _ = driver.parking(d)
        answer = app.broker.call(
            conc.gate(keys, "holder", d, job_id, payload, record, task="c", lease_ms=600)
        )
        assert answer.run
        ids.append(job_id)
        HOLDER_DELIVERIES[job_id] = d
    yield ids


def try_fourth(app: Conveyor, keys: QueueKeys, lease_ms: int = 600) -> Any:
    """Deliver (promoting first) the waiting fourth job and pass it through the gate."""
    driver.promote_due(app, keys)
    deliveries = app.broker.call(operations.fetch(keys, "other", 1))
    if not deliveries:
        return None
    job_id, payload, record, _ = driver.parking(deliveries[0])
    conc = Limits(concurrency=ConcurrencyLimit.parse(3, retry_ms=10_000))
    return app.broker.call(
        conc.gate(
            keys, "other", deliveries[0], job_id, payload, record, task="c", lease_ms=lease_ms
        )
    )


def test_a_holder_that_stops_renewing_gives_its_slots_back_after_the_lease(
    app: Conveyor, keys: QueueKeys, r: redis.Redis, held_three: list[str]
) -> None:
    start = now_ms(r)
    waiting = try_fourth(app, keys)
    assert waiting.outcome == "wait"
    # with no release to wake it, it comes back when the earliest lease expires
    assert waiting.at_ms <= start + 600 + 50
    deadline = time.monotonic() + 3
    answer = None
    while answer is None or not answer.run:
        assert time.monotonic() < deadline, "the dead holder's slot never came back"
        time.sleep(0.02)
        answer = try_fourth(app, keys) or answer
    assert 550 <= answer.at_ms - start <= 600 + 300


def test_renewed_leases_outlive_the_timeout_and_a_sigkilled_holder_frees_them(
    app: Conveyor, keys: QueueKeys, r: redis.Redis, held_three: list[str]
) -> None:
    renewing = SPAWN.Event()
    holder = SPAWN.Process(
        target=driver.hold_and_renew, args=(app.url, app.namespace, held_three, 600, renewing)
    )
    holder.start()
    # A spawned process can take longer than a lease to start on a loaded machine: this
    # process keeps the leases until the holder's first renewal is stored.
    held = [Held("c", None, job_id) for job_id in held_three]
    while not renewing.wait(0.1):
        app.broker.call(renew(keys, held, 600))
    try:
        time.sleep(1.5)  # 2.5 lease timeouts, renewed by the holder alone
        assert r.zcard(leases_key(keys, "c")) == 3
        answer = try_fourth(app, keys)
        assert answer is not None and answer.outcome == "wait"
    finally:
        assert holder.pid is not None
        os.kill(holder.pid, signal.SIGKILL)
        holder.join(5)
    killed = now_ms(r)
    answer = None
    deadline = time.monotonic() + 3
    while answer is None or not answer.run:
        assert time.monotonic() < deadline, "the killed holder's slots never came back"
        time.sleep(0.02)
        answer = try_fourth(app, keys) or answer
    assert answer.at_ms - killed <= 600 + 300


def test_renew_reports_leases_that_already_expired(
    app: Conveyor, keys: QueueKeys, held_three: list[str]
) -> None:
    time.sleep(0.7)
    lost = app.broker.call(renew(keys, [Held("c", None, held_three[0])], 600))
    assert lost == [held_three[0]]


def test_release_frees_the_slot_and_wakes_the_oldest_waiter(
    app: Conveyor, keys: QueueKeys, r: redis.Redis, held_three: list[str]
) -> None:
    waiting = try_fourth(app, keys)
    assert waiting.outcome == "wait"
    (waiter,) = (m.decode() for m in r.zrange(waiters_key(keys, "c"), 0, -1))  # type: ignore[union-attr]
    assert (r.zscore(keys.delayed, waiter) or 0) > now_ms(r)
    first = held_three[0]
    d = HOLDER_DELIVERIES[first]
    # the holder ends its job (the ack), then releases, as the worker will in one pipeline
    r.xack(keys.stream(d.level), GROUP, d.entry_id)
    done = app.broker.call(release(keys, "holder", d, first, task="c"))
    assert done.released and done.woken == waiter
    assert (r.zscore(keys.delayed, waiter) or 0) <= now_ms(r)  # due now
    assert r.zcard(leases_key(keys, "c")) == 2
    answer = try_fourth(app, keys)
    assert answer is not None and answer.run
    assert r.zcard(waiters_key(keys, "c")) == 0
    # a second release of the same job gives nothing back
    again = app.broker.call(release(keys, "holder", d, first, task="c"))
    assert (again.released, again.woken, again.foreign) == (False, None, False)


def test_a_release_by_a_worker_that_lost_the_entry_keeps_the_lease_of_the_new_holder(
    app: Conveyor, keys: QueueKeys, r: redis.Redis, held_three: list[str]
) -> None:
    first = held_three[0]
    d = HOLDER_DELIVERIES[first]
    r.xclaim(keys.stream(d.level), GROUP, "new-holder", 0, [d.entry_id])  # reclaimed
    stale = app.broker.call(release(keys, "holder", d, first, task="c"))
    assert stale.foreign and not stale.released
    assert r.zscore(leases_key(keys, "c"), first) is not None


def test_a_rate_above_1000_per_second_is_not_rounded_to_one_job_per_millisecond(
    app: Conveyor, keys: QueueKeys
) -> None:
    limit = Limits(rate=RateLimit.parse("100000/s"))
    driver.add_jobs(app, keys, "t", ["x"] * 200)
    outcomes = []
    start = time.monotonic()
    for d in deliver(app, keys, "w", 200):
        job_id, payload, record, _ = driver.parking(d)
        outcomes.append(
            app.broker.call(
                limit.gate(keys, "w", d, job_id, payload, record, task="t", lease_ms=0)
            ).outcome
        )
    elapsed_ms = (time.monotonic() - start) * 1000
    # 200 gates take far longer than 2 ms at 100,000/s: all of them run
    assert outcomes.count("run") == 200, (outcomes.count("wait"), elapsed_ms)


def test_with_both_limits_a_full_concurrency_limit_spends_no_rate_slot(
    app: Conveyor, keys: QueueKeys, r: redis.Redis
) -> None:
    both = Limits(RateLimit.parse("1/h"), ConcurrencyLimit.parse(1, retry_ms=5000))
    driver.add_jobs(app, keys, "b", ["x", "x"])
    first, second = deliver(app, keys, "w", 2)
    j1, p1, rec1, _ = driver.parking(first)
    j2, p2, rec2, _ = driver.parking(second)
    ran = app.broker.call(both.gate(keys, "w", first, j1, p1, rec1, task="b", lease_ms=60_000))
    assert ran.run and r.zscore(leases_key(keys, "b"), j1)
    tat = r.zscore(rate_key(keys, "b"), "tat")
    parked = app.broker.call(both.gate(keys, "w", second, j2, p2, rec2, task="b", lease_ms=60_000))
    assert parked.outcome == "wait" and parked.at_ms - now_ms(r) <= 5001
    assert r.zscore(rate_key(keys, "b"), "tat") == tat  # no rate slot taken
    assert r.zscore(rate_key(keys, "b"), j2) is None  # none reserved either
    assert r.zscore(waiters_key(keys, "b"), j2) is not None


def test_with_both_limits_a_job_waiting_for_its_rate_slot_holds_no_lease(
    app: Conveyor, keys: QueueKeys, r: redis.Redis
) -> None:
    both = Limits(RateLimit.parse("1/h"), ConcurrencyLimit.parse(5))
    driver.add_jobs(app, keys, "b", ["x", "x"])
    first, second = deliver(app, keys, "w", 2)
    j1, p1, rec1, _ = driver.parking(first)
    j2, p2, rec2, _ = driver.parking(second)
    assert app.broker.call(both.gate(keys, "w", first, j1, p1, rec1, task="b", lease_ms=60_000)).run
    parked = app.broker.call(both.gate(keys, "w", second, j2, p2, rec2, task="b", lease_ms=60_000))
    assert parked.outcome == "wait" and parked.at_ms >= now_ms(r) + 3_500_000
    assert r.zscore(leases_key(keys, "b"), j2) is None
    assert r.zcard(leases_key(keys, "b")) == 1


def test_every_key_a_limit_script_touches_is_in_the_queue_hash_slot(keys: QueueKeys) -> None:
    from redis.crc import key_slot

    from conveyor.broker import Call
    from conveyor.broker.operations import Delivery

    d = Delivery(keys.queue, "high", "1-0", {})
    both = Limits(RateLimit.parse("5/s"), ConcurrencyLimit.parse(2))
    calls: list[Call[Any]] = [
        both.gate(keys, "w", d, "j", b"{}", b"{}", task="a:b{c}", lease_ms=1, rate_key_value="{x}"),
        release(keys, "w", d, "j", task="t", key="k"),
        renew(keys, [Held("t", "k", "j"), Held("u", None, "i")], 1000),
    ]
    slot = key_slot(keys.stream("normal").encode())
    for call in calls:
        n = int(call.command[2])
        touched = call.command[3 : 3 + n]
        assert n >= 3 or (call.script is not None and call.script.name == "concurrency_renew")
        assert {key_slot(str(k).encode()) for k in touched} == {slot}, touched


def gate_all(app: Conveyor, keys: QueueKeys, limits: Limits, task: str, n: int) -> list[str]:
    """Deliver ``n`` jobs and pass each through ``limits`` keyed by its tenant argument."""
    outcomes = []
    for d in deliver(app, keys, "w", n):
        job_id, payload, record, tenant = driver.parking(d)
        answer = app.broker.call(
            limits.gate(
                keys,
                "w",
                d,
                job_id,
                payload,
                record,
                task=task,
                lease_ms=60_000,
                rate_key_value=tenant,
                concurrency_key_value=tenant,
            )
        )
        outcomes.append(f"{tenant}:{answer.outcome}")
    return outcomes


def test_a_rate_burst_lets_that_many_start_at_once(app: Conveyor, keys: QueueKeys) -> None:
    driver.add_jobs(app, keys, "t", ["x"] * 4)
    limits = Limits(rate=RateLimit.parse("1/m", burst=3))
    assert gate_all(app, keys, limits, "t", 4) == ["x:run", "x:run", "x:run", "x:wait"]


def test_concurrency_per_key_does_not_block_other_keys(app: Conveyor, keys: QueueKeys) -> None:
    driver.add_jobs(app, keys, "c", ["a", "a", "a", "b", "b", "a"])
    limits = Limits(concurrency=ConcurrencyLimit.parse(2))
    assert gate_all(app, keys, limits, "c", 6) == [
        "a:run",
        "a:run",
        "a:wait",
        "b:run",
        "b:run",
        "a:wait",
    ]
