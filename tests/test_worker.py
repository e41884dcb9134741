"""Workers against a real Redis: results, retries, dead letters, malformed entries, delays,
priorities, timeouts, and waiting for a result without polling."""

from __future__ import annotations

import asyncio
import itertools
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import msgspec
import pytest
import redis

from conveyor import (
    Backoff,
    Conveyor,
    JobFailed,
    JobState,
    JobTimeout,
)
from conveyor.scripts import script
from tests.conftest import fast, wait_until, worker_task, worker_thread


def stream(namespace: str, level: str = "normal", queue: str = "default") -> str:
    return f"{namespace}:{{{queue}}}:ready:{level}"


def dead_stream(namespace: str, queue: str = "default") -> str:
    return f"{namespace}:{{{queue}}}:dead"


def pending_total(r: redis.Redis, namespace: str, queue: str = "default") -> int:
    total = 0
    for level in ("high", "normal", "low"):
        total += r.xpending(stream(namespace, level, queue), "conveyor")["pending"]
    return total


def redis_ms(r: redis.Redis) -> int:
    seconds, micros = r.time()
    return int(seconds) * 1000 + int(micros) // 1000


@dataclass
class Point:
    x: int
    y: int


# -- results ---------------------------------------------------------------------------------
def test_sync_and_async_tasks_run_and_return_typed_results(app: Conveyor) -> None:
    seen: list[Any] = []

    @app.task
    def word_counts(words: list[str]) -> dict[str, int]:
        counts: dict[str, int] = {}
        for w in words:
            counts[w] = counts.get(w, 0) + 1
        return counts

    @app.task
    async def make_point(x: int, y: int) -> Point:
        await asyncio.sleep(0.01)
        return Point(x, y)

    @app.task
    def pair(n: int) -> tuple[int, str]:
        return (n, str(n))

    @app.task
    async def next_day(when: datetime) -> datetime:
        seen.append(when)
        return when + timedelta(days=1)

    when = datetime(2030, 5, 6, 7, 8, 9, tzinfo=timezone.utc)
    with worker_thread(app, fast()):
        j1 = word_counts.enqueue(["a", "b", "a"])
        j2 = make_point.enqueue(1, y=2)
        j3 = pair.enqueue(3)
        j4 = next_day.enqueue(when)
        assert j1.result(timeout=10) == {"a": 2, "b": 1}
        point = j2.result(timeout=10)
        assert isinstance(point, Point) and point == Point(1, 2)
        got = j3.result(timeout=10)
        assert isinstance(got, tuple) and got == (3, "3")
        day = j4.result(timeout=10)
        assert isinstance(day, datetime) and day == when + timedelta(days=1)
    # the argument arrived as a datetime, converted from its JSON string by the annotation
    assert seen == [when]
    for j in (j1, j2, j3, j4):
        assert j.status() is JobState.DONE
        info = j.info()
        assert info.record is not None and info.record.attempt == 1


async def test_results_come_back_through_result_async(app: Conveyor) -> None:
    @app.task
    async def add(a: int, b: int) -> int:
        return a + b

    @app.task
    def scale(p: Point, k: int) -> Point:
        return Point(p.x * k, p.y * k)

    async with worker_task(app, fast()):
        j1 = await add.enqueue_async(2, 3)
        j2 = await scale.enqueue_async(Point(1, 2), 10)
        assert await j1.result_async(timeout=10) == 5
        p = await j2.result_async(timeout=10)
        assert isinstance(p, Point) and p == Point(10, 20)
        assert await j1.status_async() is JobState.DONE
        # a handle made from the id alone (another process) reads the stored JSON value
        assert await app.job(j2.id).result_async(timeout=5) == {"x": 10, "y": 20}
    await app.aclose()


def test_result_its_unresolvable_annotation_cannot_convert_back_fails_at_once(
    app: Conveyor,
) -> None:
    # With `from __future__ import annotations`, a class defined inside a function cannot be
    # resolved by get_type_hints, so nothing says how to rebuild a Local from its JSON: the
    # result cannot be stored exactly. (This test used to expect the dict back; results JSON
    # changes are refused since issue 8.) It fails at once, without retries, and result()
    # says why instead of blowing up.
    runs: list[int] = []

    @dataclass
    class Local:
        x: int

    @app.task(retries=3)
    def make(x: int) -> Local:
        runs.append(x)
        return Local(x)

    with worker_thread(app, fast()):
        job = make.enqueue(4)
        wait_until(lambda: job.status() is JobState.DEAD, 10, "the job to fail")
        with pytest.raises(JobFailed, match="cannot be stored as JSON"):
            job.result(timeout=5)
    assert runs == [4]


def test_blocking_sync_task_does_not_block_async_tasks(app: Conveyor) -> None:
    started, finished = threading.Event(), threading.Event()

    @app.task
    def blocking() -> str:
        started.set()
        time.sleep(1.5)
        finished.set()
        return "slow"

    @app.task
    async def quick(x: int) -> int:
        await asyncio.sleep(0.05)
        return x + 1

    with worker_thread(app, fast(concurrency=4)):
        slow_job = blocking.enqueue()
        assert started.wait(5), "the blocking task never started"
        t0 = time.monotonic()
        quick_job = quick.enqueue(41)
        assert quick_job.result(timeout=1.0) == 42
        took = time.monotonic() - t0
        assert not finished.is_set(), "the async task only finished after the sync one"
        assert took < 1.0
        assert slow_job.result(timeout=5) == "slow"


# -- retries and dead letters ------------------------------------------------------------------
def test_failing_task_retries_through_delayed_set_then_lands_in_dead_stream(
    app: Conveyor, r: redis.Redis, namespace: str
) -> None:
    attempts: list[float] = []

    @app.task(retries=2, backoff=Backoff(base=0.3, cap=0.3, jitter=False))
    def flaky(x: int) -> int:
        attempts.append(time.monotonic())
        raise ValueError(f"boom {len(attempts)}")

    delayed = f"{namespace}:{{default}}:delayed"
    with worker_thread(app, fast()) as w:
        job = flaky.enqueue(7)
        states: set[JobState] = set()
        seen_in_delayed = False
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            info = job.info()
            states.add(info.state)
            if info.state is JobState.RETRYING and r.zscore(delayed, job.id) is not None:
                seen_in_delayed = True
                assert info.due_ms is not None
                assert info.record is not None and info.record.error
            if info.state is JobState.DEAD:
                break
            time.sleep(0.01)
        with pytest.raises(JobFailed) as failed:
            job.result(timeout=5)
        counts = dict(w.counts)

    assert len(attempts) == 3
    assert JobState.RETRYING in states
    assert seen_in_delayed, "the job never waited in the delayed set between attempts"
    assert failed.value.error is not None and "ValueError: boom 3" in failed.value.error
    assert failed.value.traceback is not None
    assert "Traceback" in failed.value.traceback and "boom 3" in failed.value.traceback
    assert job.status() is JobState.DEAD
    assert counts["retried"] == 2 and counts["dead"] == 1

    entries = r.xrange(dead_stream(namespace))
    assert len(entries) == 1
    fields = entries[0][1]
    assert fields[b"dead_reason"] == b"failed"
    assert b"ValueError: boom 3" in fields[b"dead_error"]
    assert b"Traceback" in fields[b"dead_traceback"]
    assert b"raise ValueError" in fields[b"dead_traceback"]
    assert fields[b"task"] == b"flaky"
    assert msgspec.json.decode(fields[b"args"]) == [7]
    assert fields[b"id"].decode() == job.id
    assert fields[b"attempt"] == b"3"
    history = msgspec.json.decode(fields[b"dead_history"])
    assert len(history) == 3
    assert [h["attempt"] for h in history] == [1, 2, 3]
    assert [h["error"] for h in history] == [f"ValueError: boom {i}" for i in (1, 2, 3)]
    # nothing left anywhere else
    assert r.zcard(delayed) == 0
    assert r.hlen(f"{namespace}:{{default}}:payloads") == 0
    assert pending_total(r, namespace) == 0


def test_retries_are_spaced_by_the_backoff(app: Conveyor) -> None:
    attempts: list[float] = []

    @app.task(retries=2, backoff=Backoff(base=0.2, cap=0.2, jitter=False))
    def always_fails() -> None:
        attempts.append(time.monotonic())
        raise RuntimeError("nope")

    with worker_thread(app, fast()):
        job = always_fails.enqueue()
        with pytest.raises(JobFailed):
            job.result(timeout=10)
    assert len(attempts) == 3
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    # due = Redis TIME in ms (floored) + 200 ms, so a gap can be at most 1 ms under 0.2 s
    assert all(g >= 0.199 for g in gaps), gaps
    assert all(g < 1.5 for g in gaps), gaps


def test_zero_retries_goes_straight_to_dead(app: Conveyor, r: redis.Redis, namespace: str) -> None:
    calls: list[int] = []

    @app.task(retries=0)
    def once() -> None:
        calls.append(1)
        raise KeyError("missing")

    with worker_thread(app, fast()):
        job = once.enqueue()
        with pytest.raises(JobFailed) as failed:
            job.result(timeout=10)
    assert calls == [1]
    assert failed.value.error is not None and "KeyError" in failed.value.error
    [(_, fields)] = r.xrange(dead_stream(namespace))
    assert len(msgspec.json.decode(fields[b"dead_history"])) == 1


# -- malformed entries -------------------------------------------------------------------------
MAX_PAYLOAD = 2000


def _entry(**changes: bytes | str | None) -> dict[str, bytes | str]:
    fields: dict[str, bytes | str] = {
        "version": "1",
        "task": "add",
        "args": "[1, 2]",
        "kwargs": "{}",
        "enqueued_at": "1700000000000",
        "attempt": "1",
    }
    for name, value in changes.items():
        if value is None:
            fields.pop(name)
        else:
            fields[name] = value
    return fields


MALFORMED: list[tuple[str, dict[str, bytes | str], str]] = [
    ("bad-json-args", _entry(args="[1, 2"), "malformed"),
    ("args-not-array", _entry(args='{"a": 1}'), "malformed"),
    ("kwargs-not-object", _entry(kwargs="[1]"), "malformed"),
    ("missing-task", _entry(task=None), "malformed"),
    ("missing-args", _entry(args=None), "malformed"),
    ("invalid-utf8-task", _entry(task=b"\xff\xfeadd"), "malformed"),
    ("bad-attempt", _entry(attempt="many"), "malformed"),
    ("future-version", _entry(version="99"), "malformed"),
    ("oversize", _entry(args='["' + "x" * (MAX_PAYLOAD + 500) + '"]'), "malformed"),
    ("unknown-task", _entry(task="no_such_task"), "unknown_task"),
    ("wrong-type", _entry(args='["x", 2]'), "bad_arguments"),
    ("wrong-type-kwarg", _entry(args="[1]", kwargs='{"b": [2]}'), "bad_arguments"),
    ("too-many-args", _entry(args="[1, 2, 3]"), "bad_arguments"),
    ("too-few-args", _entry(args="[1]"), "bad_arguments"),
    ("unexpected-kwarg", _entry(args="[1, 2]", kwargs='{"c": 3}'), "bad_arguments"),
]


def test_malformed_entries_are_dead_lettered_on_first_delivery(
    app: Conveyor, r: redis.Redis, namespace: str
) -> None:
    ran: list[tuple[int, int]] = []

    @app.task
    def add(a: int, b: int) -> int:
        ran.append((a, b))
        return a + b

    settings = fast(max_payload_bytes=MAX_PAYLOAD)
    with worker_thread(app, settings):
        expected: dict[str, tuple[str, str]] = {}
        for name, fields, reason in MALFORMED:
            entry_id = r.xadd(stream(namespace), fields).decode()  # type: ignore[arg-type]
            expected[entry_id] = (name, reason)
        good = add.enqueue(20, 22)
        assert good.result(timeout=10) == 42
        wait_until(
            lambda: r.xlen(dead_stream(namespace)) >= len(MALFORMED),
            10,
            f"{len(MALFORMED)} dead entries",
        )
        wait_until(lambda: pending_total(r, namespace) == 0, 5, "an empty PEL")

    assert ran == [(20, 22)], "a malformed job reached the task function"
    dead = r.xrange(dead_stream(namespace))
    assert len(dead) == len(MALFORMED)
    # Keyed by job id: a job for an unknown task is handed back (for a worker that might
    # register it) before it is dead-lettered, so it dies from a later entry of its own.
    by_job = {}
    for _, fields in dead:
        level, _, _ = fields[b"dead_from"].decode().partition(":")
        assert level == "normal"
        by_job[fields[b"id"].decode()] = fields
    assert set(by_job) == {f"default:n:{entry_id}" for entry_id in expected}
    for entry_id, (name, reason) in expected.items():
        fields = by_job[f"default:n:{entry_id}"]
        assert fields[b"dead_reason"].decode() == reason, name
        assert fields[b"dead_deliveries"] == b"1", name
        assert fields[b"dead_error"], name
        job = app.job(f"default:n:{entry_id}")
        assert job.status() is JobState.DEAD, name
        with pytest.raises(JobFailed):
            job.result(timeout=1)
    assert pending_total(r, namespace) == 0


def test_entry_with_invalid_utf8_in_args_is_dead_lettered_on_first_delivery(
    app: Conveyor, r: redis.Redis, namespace: str
) -> None:
    @app.task
    def add(a: int, b: int) -> int:
        return a + b

    with worker_thread(app, fast()):
        entry_id = r.xadd(stream(namespace), _entry(args=b'["\xff", 2]')).decode()  # type: ignore[arg-type]
        good = add.enqueue(1, 1)
        assert good.result(timeout=10) == 2
        wait_until(lambda: r.xlen(dead_stream(namespace)) >= 1, 3, "a dead entry")
        wait_until(lambda: pending_total(r, namespace) == 0, 3, "an empty PEL")
    [(_, fields)] = r.xrange(dead_stream(namespace))
    assert fields[b"dead_from"] == f"normal:{entry_id}".encode()
    assert fields[b"dead_reason"] == b"malformed"
    assert fields[b"dead_deliveries"] == b"1"


def test_job_added_by_raw_xadd_in_wire_format_runs_and_its_result_is_readable(
    app: Conveyor, r: redis.Redis, namespace: str
) -> None:
    @app.task
    def add(a: int, b: int) -> int:
        return a + b

    with worker_thread(app, fast()):
        now = redis_ms(r)
        documented = {
            "version": "1",
            "task": "add",
            "args": "[2, 3]",
            "kwargs": "{}",
            "enqueued_at": str(now),
            "attempt": "1",
        }
        e1 = r.xadd(stream(namespace), documented).decode()  # type: ignore[arg-type]
        e2 = r.xadd(
            stream(namespace, "high"), documented | {"args": "[10]", "kwargs": '{"b": 5}'}
        ).decode()  # type: ignore[arg-type]
        minimal = {"task": "add", "args": "[100, 1]", "kwargs": "{}"}
        e3 = r.xadd(stream(namespace, "low"), minimal).decode()  # type: ignore[arg-type]
        assert app.job(f"default:n:{e1}").result(timeout=10) == 5
        assert app.job(f"default:h:{e2}").result(timeout=10) == 15
        assert app.job(f"default:l:{e3}").result(timeout=10) == 101
    assert app.job(f"default:n:{e1}").status() is JobState.DONE


# -- delayed jobs ------------------------------------------------------------------------------
def test_delayed_job_runs_after_its_delay_and_not_before(app: Conveyor) -> None:
    ran_at: list[float] = []

    @app.task
    def stamp(x: int) -> int:
        ran_at.append(time.monotonic())
        return x

    with worker_thread(app, fast()):
        t0 = time.monotonic()
        job = stamp.enqueue_in(0.5, 9)
        time.sleep(0.3)
        assert ran_at == [], "the delayed job ran early"
        assert job.status() is JobState.SCHEDULED
        assert job.result(timeout=5) == 9
    assert len(ran_at) == 1
    waited = ran_at[0] - t0
    assert waited >= 0.499, f"ran after {waited:.3f}s, before its 0.5 s delay"
    assert waited < 2.0, f"ran only after {waited:.3f}s"


def test_job_scheduled_in_the_past_runs_at_once(app: Conveyor) -> None:
    @app.task
    def echo(x: int) -> int:
        return x

    with worker_thread(app, fast()):
        job = echo.enqueue_at(time.time() - 3600, 1)
        assert job.result(timeout=5) == 1


# -- priorities --------------------------------------------------------------------------------
def test_higher_priority_levels_drain_first(app: Conveyor, r: redis.Redis, namespace: str) -> None:
    order: list[tuple[str, int]] = []

    @app.task
    def record(level: str, i: int) -> None:
        order.append((level, i))

    # the consumer group must exist at id 0 before the jobs are added; start a worker once
    with worker_thread(app, fast(concurrency=1)):
        pass
    for i in range(5):
        record.using(priority="low").enqueue("low", i)
    for i in range(5):
        record.enqueue("normal", i)
    for i in range(5):
        record.using(priority="high").enqueue("high", i)
    with worker_thread(app, fast(concurrency=1)):
        wait_until(lambda: len(order) == 15, 10, "15 jobs to run")
    expected = [(level, i) for level in ("high", "normal", "low") for i in range(5)]
    assert order == expected


def test_priority_order_without_a_prior_group(app: Conveyor) -> None:
    order: list[str] = []

    @app.task
    def record(level: str) -> None:
        order.append(level)

    for level in ("low", "normal", "high") * 5:
        record.using(priority=level).enqueue(level)
    with worker_thread(app, fast(concurrency=1)):
        wait_until(lambda: len(order) == 15, 10, "15 jobs to run")
    assert order == ["high"] * 5 + ["normal"] * 5 + ["low"] * 5


# -- timeouts ----------------------------------------------------------------------------------
def test_async_task_over_its_timeout_fails_with_task_timeout_and_is_retried(
    app: Conveyor, r: redis.Redis, namespace: str
) -> None:
    starts: list[float] = []
    cancelled: list[bool] = []

    @app.task(timeout=0.3, retries=1, backoff=Backoff(base=0.05, cap=0.05, jitter=False))
    async def sleepy() -> str:
        starts.append(time.monotonic())
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise
        return "woke"

    with worker_thread(app, fast()):
        job = sleepy.enqueue()
        t0 = time.monotonic()
        with pytest.raises(JobFailed) as failed:
            job.result(timeout=10)
        took = time.monotonic() - t0
    assert len(starts) == 2, "retries=1 means two attempts"
    assert cancelled == [True, True], "the timed-out coroutine was not cancelled"
    assert failed.value.error is not None and "TaskTimeout" in failed.value.error
    assert took < 3.0
    [(_, fields)] = r.xrange(dead_stream(namespace))
    assert fields[b"dead_reason"] == b"failed"
    assert b"TaskTimeout" in fields[b"dead_error"]
    history = msgspec.json.decode(fields[b"dead_history"])
    assert len(history) == 2 and all("TaskTimeout" in h["error"] for h in history)


def test_task_within_its_timeout_succeeds(app: Conveyor) -> None:
    @app.task(timeout=2.0)
    async def brief() -> str:
        await asyncio.sleep(0.05)
        return "ok"

    with worker_thread(app, fast()):
        assert brief.enqueue().result(timeout=5) == "ok"


def test_result_wait_times_out_with_job_timeout(app: Conveyor) -> None:
    @app.task
    def never_run() -> None: ...

    job = never_run.enqueue()  # no worker
    t0 = time.monotonic()
    with pytest.raises(JobTimeout):
        job.result(timeout=0.3)
    assert 0.25 <= time.monotonic() - t0 < 2.0


# -- waiting without polling -------------------------------------------------------------------
class Monitor:
    """Records every command Redis receives (MONITOR on a raw socket of its own)."""

    def __init__(self, r: redis.Redis) -> None:
        kw = r.connection_pool.connection_kwargs
        if kw.get("path"):
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.connect(kw["path"])
        else:
            self.sock = socket.create_connection((kw.get("host", "127.0.0.1"), kw.get("port")))
        if kw.get("password"):
            user = kw.get("username")
            auth = ["AUTH", *([user] if user else []), kw["password"]]
            self._send(auth)
            assert self._readline().startswith(b"+OK")
        self._send(["MONITOR"])
        assert self._readline().startswith(b"+OK")
        self.sock.settimeout(0.05)
        self.lines: list[bytes] = []
        self._buf = b""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _send(self, parts: list[str]) -> None:
        out = f"*{len(parts)}\r\n".encode()
        for p in parts:
            b = p.encode()
            out += b"$%d\r\n%s\r\n" % (len(b), b)
        self.sock.sendall(out)

    def _readline(self) -> bytes:
        data = b""
        while not data.endswith(b"\r\n"):
            data += self.sock.recv(1)
        return data

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not chunk:
                return
            self._buf += chunk
            *done, self._buf = self._buf.split(b"\r\n")
            self.lines.extend(done)

    def close(self) -> None:
        time.sleep(0.1)  # let the last commands arrive
        self._stop.set()
        self._thread.join(5)
        self.sock.close()

    def count(self, *needles: str) -> int:
        wanted = [n.lower().encode() for n in needles]
        return sum(1 for line in self.lines if all(n in line.lower() for n in wanted))

    def script_calls(self, name: str, *needles: str) -> int:
        """EVALSHA calls of one script (either of its SHAs) whose line holds all needles."""
        s = script(name)
        shas = {s.sha, getattr(s, "flagged_sha", s.sha)}
        return sum(self.count('"evalsha"', sha, *needles) for sha in shas)


@pytest.fixture
def monitor_of(r: redis.Redis) -> Iterator[Callable[[], Monitor]]:
    made: list[Monitor] = []

    def make() -> Monitor:
        m = Monitor(r)
        made.append(m)
        return m

    yield make
    for m in made:
        if not m._stop.is_set():
            m.close()


def test_waiting_for_a_result_does_not_busy_poll(
    app: Conveyor, namespace: str, monitor_of: Callable[[], Monitor]
) -> None:
    @app.task
    def slow() -> str:
        time.sleep(1.5)
        return "done"

    with worker_thread(app, fast()):
        job = slow.enqueue()
        mon = monitor_of()
        t0, cpu0 = time.monotonic(), time.thread_time()
        assert job.result(timeout=3) == "done"
        cpu, elapsed = time.thread_time() - cpu0, time.monotonic() - t0
        mon.close()
    status_calls = mon.script_calls("status", namespace)
    assert mon.count(namespace) > 0, "MONITOR saw nothing of this test; the count is meaningless"
    assert 1 <= status_calls < 10, f"{status_calls} status script calls during one wait"
    assert cpu < 0.3, f"the waiting thread used {cpu:.2f}s of CPU in {elapsed:.2f}s"
    # woken by the completion message, not by the 2 s re-check
    assert 1.3 <= elapsed < 1.95, f"result arrived after {elapsed:.2f}s for a 1.5 s job"


def test_waiting_for_a_result_async_does_not_busy_poll(
    app: Conveyor, namespace: str, monitor_of: Callable[[], Monitor]
) -> None:
    @app.task
    def slow() -> str:
        time.sleep(1.5)
        return "done"

    measured: dict[str, Any] = {}

    def waiter(job_id: str) -> None:
        async def main() -> None:
            job = app.job(job_id)
            t0, cpu0 = time.monotonic(), time.thread_time()
            try:
                measured["value"] = await job.result_async(timeout=3)
            finally:
                measured["cpu"] = time.thread_time() - cpu0
                measured["elapsed"] = time.monotonic() - t0
                await app.aclose()

        asyncio.run(main())

    with worker_thread(app, fast()):
        job = slow.enqueue()
        mon = monitor_of()
        t = threading.Thread(target=waiter, args=(job.id,))
        t.start()
        t.join(10)
        mon.close()
    assert measured.get("value") == "done", measured
    status_calls = mon.script_calls("status", namespace)
    assert 1 <= status_calls < 10, f"{status_calls} status script calls during one wait"
    assert measured["cpu"] < 0.3, f"the waiting loop used {measured['cpu']:.2f}s of CPU"
    assert 1.3 <= measured["elapsed"] < 1.95, f"result after {measured['elapsed']:.2f}s"


def test_stop_ends_an_idle_workers_blocking_read_at_once(app: Conveyor) -> None:
    """CLIENT UNBLOCK must name the connection the blocking read runs on: a pipelined read
    on another connection than the one whose CLIENT ID was taken waited out its BLOCK."""

    @app.task
    def add(a: int, b: int) -> int:
        return a + b

    with worker_thread(app, fast(block_ms=5000)):
        time.sleep(0.5)  # nothing queued: the worker is in its blocking read
        assert add.enqueue(2, 3).result(timeout=10) == 5
        time.sleep(0.5)  # blocked again
        t0 = time.monotonic()
    assert time.monotonic() - t0 < 2.0, "stop waited for the 5 s blocking read"
