"""cron_fire.lua against a real Redis: each tick enqueued once, the mark only moves forward,
a stopped schedule's keys expire, and a worker runs what it enqueued (signed or not)."""

from __future__ import annotations

import threading
import time
from collections import Counter

import redis
from redis.crc import key_slot

from conveyor import Conveyor
from conveyor.cron_marks import fire, mark_key, read_mark, tick_key
from conveyor.keys import QueueKeys
from conveyor.schedules import to_fire
from tests.conftest import fast, wait_until, worker_thread

TASK = "nightly"
WEEK_MS = 7 * 24 * 3600 * 1000


def redis_now_ms(r: redis.Redis) -> int:
    seconds, micros = r.time()
    return int(seconds) * 1000 + int(micros) // 1000


def fire_ticks(
    app: Conveyor, ticks: list[int], window_ms: int = 60_000, ttl_ms: int = WEEK_MS
) -> tuple[int | None, list[int]]:
    fired = app.broker.call(
        fire(
            app.keys("default"),
            "normal",
            TASK,
            ticks,
            unique_window_ms=window_ms,
            mark_ttl_ms=ttl_ms,
            max_bytes=app.max_payload_bytes,
            signer=app.signer,
        )
    )
    return fired.mark_ms, [t for t, _ in fired.enqueued]


def test_three_threads_firing_overlapping_ticks_enqueue_each_once(
    redis_url: str, namespace: str, r: redis.Redis
) -> None:
    now = redis_now_ms(r)
    ticks = [now - 60_000 + i * 200 for i in range(300)]  # all in the past on Redis' clock
    apps = [Conveyor(redis_url, namespace=namespace) for _ in range(3)]
    enqueued: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(3)

    def worker(n: int) -> None:
        # Each thread walks the ticks in batches of its own size, re-sending stale batches
        # (below the mark) as a worker with an old mark would.
        start.wait()
        size = 3 + 4 * n
        for i in range(0, len(ticks), size):
            _, new = fire_ticks(apps[n], ticks[max(0, i - size) : i + size])
            with lock:
                enqueued.extend(new)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    for a in apps:
        a.close()
    assert not any(t.is_alive() for t in threads)
    assert Counter(enqueued) == Counter(ticks), "each tick enqueued exactly once overall"
    assert r.xlen(app_keys(namespace).stream("normal")) == len(ticks)
    assert int(r.get(mark_key(app_keys(namespace), TASK)) or 0) == ticks[-1]


def app_keys(namespace: str) -> QueueKeys:
    return QueueKeys(namespace, "default")


def test_the_mark_only_moves_forward_and_stale_ticks_are_not_refired(
    app: Conveyor, r: redis.Redis
) -> None:
    now = redis_now_ms(r)
    t5, t10 = now - 5_000, now - 1_000
    assert fire_ticks(app, [t10], window_ms=50) == (t10, [t10])
    time.sleep(0.1)  # the tick key of t10 is gone; the mark still knows
    assert fire_ticks(app, [t5]) == (t10, []), "an older tick is below the mark"
    assert fire_ticks(app, [t10]) == (t10, []), "a fired tick whose key expired"
    assert app.broker.call(read_mark(app.keys("default"), TASK)) == t10
    assert r.xlen(app.keys("default").stream("normal")) == 1


def test_a_tick_later_than_redis_clock_is_refused(app: Conveyor, r: redis.Redis) -> None:
    now = redis_now_ms(r)
    assert fire_ticks(app, [now - 1_000, now + 60_000]) == (now - 1_000, [now - 1_000])
    assert r.xlen(app.keys("default").stream("normal")) == 1


def test_a_tick_fired_by_the_old_unique_key_scheme_is_not_enqueued_again(
    app: Conveyor, r: redis.Redis
) -> None:
    keys = app.keys("default")
    now = redis_now_ms(r)
    r.set(tick_key(keys, TASK, now - 1_000), "default:n:1-0", px=60_000)
    assert fire_ticks(app, [now - 1_000]) == (now - 1_000, []), "mark advances, no new job"
    assert r.xlen(keys.stream("normal")) == 0


def test_a_stopped_schedule_keys_expire_and_firing_refreshes_them(
    app: Conveyor, r: redis.Redis
) -> None:
    keys = app.keys("default")
    now = redis_now_ms(r)
    tick = now - 1_000
    fire_ticks(app, [tick], window_ms=400, ttl_ms=400)
    mark, key = mark_key(keys, TASK), tick_key(keys, TASK, tick)
    assert r.exists(mark, key) == 2
    assert 0 < r.pttl(mark) <= 400 and 0 < r.pttl(key) <= 400
    time.sleep(0.2)
    fire_ticks(app, [], ttl_ms=400)  # a live schedule with nothing due refreshes its mark
    assert r.pttl(mark) > 300
    # The schedule is removed from code: nobody fires it again, and its keys go.
    wait_until(lambda: r.exists(mark, key) == 0, 3.0, "the schedule's keys to expire")
    assert app.broker.call(read_mark(keys, TASK)) is None


def test_every_key_the_script_touches_shares_the_queue_slot(app: Conveyor) -> None:
    keys = app.keys("default")
    call = fire(
        keys,
        "normal",
        "odd{task}:name",
        [1, 2],
        unique_window_ms=1,
        mark_ttl_ms=1,
        max_bytes=app.max_payload_bytes,
    )
    n_keys = int(call.command[2])
    touched = [str(k) for k in call.command[3 : 3 + n_keys]]
    assert len(touched) == 4
    assert {key_slot(k.encode()) for k in touched} == {key_slot(keys.stream("normal").encode())}


def test_a_worker_stopped_across_ticks_catches_up_with_misfire_all(
    app: Conveyor, r: redis.Redis
) -> None:
    ran: list[str] = []

    @app.task(name=TASK)
    def nightly() -> None:
        ran.append("ran")

    keys = app.keys("default")
    now = redis_now_ms(r)
    expression = "* * * * * *"  # every second (seconds last)
    first = to_fire(expression, "UTC", "all", None, now - 6_000).ticks
    assert len(first) == 1
    fire_ticks(app, list(first))
    # The fleet was down for ~6 ticks; the next worker reads the mark and fires them all.
    mark = app.broker.call(read_mark(keys, TASK))
    missed = to_fire(expression, "UTC", "all", mark, now, cap=4)
    assert len(missed.ticks) == 4 and missed.dropped == 2
    assert fire_ticks(app, list(missed.ticks))[1] == list(missed.ticks)
    assert (
        to_fire(expression, "UTC", "all", app.broker.call(read_mark(keys, TASK)), now).ticks == ()
    )
    with worker_thread(app, fast()):
        wait_until(lambda: len(ran) == 5, 10.0, "the fired ticks to run")


def test_a_signed_app_fires_jobs_its_worker_accepts(
    redis_url: str, namespace: str, r: redis.Redis
) -> None:
    app = Conveyor(redis_url, namespace=namespace, signing_keys=["k" * 32])
    ran: list[str] = []

    @app.task(name=TASK)
    def nightly() -> None:
        ran.append("ran")

    try:
        now = redis_now_ms(r)
        _, new = fire_ticks(app, [now - 2_000, now - 1_000])
        assert new == [now - 2_000, now - 1_000]
        with worker_thread(app, fast()):
            wait_until(lambda: len(ran) == 2, 10.0, "the signed cron jobs to run")
    finally:
        app.close()
