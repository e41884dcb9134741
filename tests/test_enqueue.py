"""Enqueueing against a real Redis: what lands in the streams and the delayed set, the state
a Job handle reports, and the errors a producer sees."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import msgspec
import pytest
import redis

from conveyor import (
    ConfigurationError,
    ConnectionFailed,
    Conveyor,
    Job,
    JobNotFound,
    JobState,
    PayloadError,
)


def redis_ms(r: redis.Redis) -> int:
    seconds, micros = r.time()
    return int(seconds) * 1000 + int(micros) // 1000


def entry_of(r: redis.Redis, stream: str, entry_id: str) -> dict[bytes, bytes]:
    found = r.xrange(stream, entry_id, entry_id)
    assert len(found) == 1, f"no entry {entry_id} in {stream}"
    return found[0][1]


def key_count(r: redis.Redis, namespace: str) -> int:
    return len(list(r.scan_iter(match=f"{namespace}:*", count=1000)))


def test_sync_enqueue_returns_queued_job_with_documented_plain_fields(
    app: Conveyor, r: redis.Redis, namespace: str
) -> None:
    @app.task
    def send_email(to: str, subject: str = "") -> None: ...

    before = redis_ms(r)
    job = send_email.enqueue("a@example.com", subject="héllo")
    after = redis_ms(r)
    assert isinstance(job, Job)
    queue, code, entry_id = job.id.split(":")
    assert (queue, code) == ("default", "n")
    assert job.status() is JobState.QUEUED

    stream = f"{namespace}:{{default}}:ready:normal"
    assert r.xlen(stream) == 1
    fields = entry_of(r, stream, entry_id)
    assert b"version" not in fields  # version 1: what a reader assumes when it is missing
    assert fields[b"task"] == b"send_email"
    assert msgspec.json.decode(fields[b"args"]) == ["a@example.com"]
    assert msgspec.json.decode(fields[b"kwargs"]) == {"subject": "héllo"}
    assert b"attempt" not in fields  # a first attempt, likewise
    assert before - 1000 <= int(fields[b"enqueued_at"]) <= after + 1000
    assert set(fields) == {b"task", b"args", b"kwargs", b"enqueued_at"}


async def test_async_enqueue_returns_queued_job_with_documented_plain_fields(
    app: Conveyor, r: redis.Redis, namespace: str
) -> None:
    @app.task
    async def summarize(doc_id: str, *, words: int = 100) -> str:
        return doc_id

    job = await summarize.enqueue_async("doc-1", words=50)
    assert job.id.startswith("default:n:")
    assert await job.status_async() is JobState.QUEUED
    assert job.status() is JobState.QUEUED
    entry_id = job.id.split(":")[2]
    fields = entry_of(r, f"{namespace}:{{default}}:ready:normal", entry_id)
    assert fields[b"task"] == b"summarize"
    assert msgspec.json.decode(fields[b"args"]) == ["doc-1"]
    assert msgspec.json.decode(fields[b"kwargs"]) == {"words": 50}
    assert set(fields) == {b"task", b"args", b"kwargs", b"enqueued_at"}
    await app.aclose()


def test_app_enqueue_by_name(app: Conveyor, r: redis.Redis, namespace: str) -> None:
    @app.task(name="reports.build")
    def build(n: int) -> int:
        return n

    job = app.enqueue("reports.build", 7)
    assert job.status() is JobState.QUEUED
    fields = entry_of(r, f"{namespace}:{{default}}:ready:normal", job.id.split(":")[2])
    assert fields[b"task"] == b"reports.build"


def test_enqueue_many_1200_jobs_gives_1200_distinct_ids_and_entries(
    app: Conveyor, r: redis.Redis, namespace: str
) -> None:
    @app.task
    def square(n: int) -> int:
        return n * n

    stream = f"{namespace}:{{default}}:ready:normal"
    xadds_before = r.info("commandstats").get("cmdstat_xadd", {}).get("calls", 0)
    jobs = square.enqueue_many([(i,) for i in range(600)] + [square.s(i) for i in range(600, 1200)])
    xadds_after = r.info("commandstats")["cmdstat_xadd"]["calls"]

    assert len(jobs) == 1200
    assert len({j.id for j in jobs}) == 1200
    assert r.xlen(stream) == 1200
    assert xadds_after - xadds_before >= 1200
    entries = r.xrange(stream)
    by_id = {eid.decode(): fields for eid, fields in entries}
    for i, job in enumerate(jobs):
        queue, code, entry_id = job.id.split(":")
        assert (queue, code) == ("default", "n")
        assert msgspec.json.decode(by_id[entry_id][b"args"]) == [i], job.id
    # ids come back in the order the jobs were given, which is also stream order
    assert [j.id.split(":")[2] for j in jobs] == list(by_id)
    assert jobs[0].status() is JobState.QUEUED
    assert jobs[-1].status() is JobState.QUEUED


def test_enqueue_many_mixes_queues_levels_and_unique_jobs_in_one_batch(
    app: Conveyor, r: redis.Redis, namespace: str
) -> None:
    """One batch holding jobs for several streams and unique jobs: each job lands where its
    task says, the handles come back in the order given, a taken unique key is not added."""

    @app.task(queue="mail")
    def send(to: str) -> None: ...

    @app.task
    def resize(n: int) -> None: ...

    urgent = resize.using(priority="high")
    once = resize.using(unique_key="nightly")
    sigs = [
        send.s("a@x"),
        resize.s(1),
        urgent.s(2),
        once.s(3),
        send.s("b@x"),
        once.s(4),
        resize.s(5),
    ]
    jobs = app.enqueue_many(sigs)

    assert [j.id.split(":")[:2] for j in jobs] == [
        ["mail", "n"],
        ["default", "n"],
        ["default", "h"],
        ["default", "n"],
        ["mail", "n"],
        ["default", "n"],
        ["default", "n"],
    ]
    assert [j.created for j in jobs] == [True, True, True, True, True, False, True]
    assert jobs[5].id == jobs[3].id, "the second job with the taken key is the first one"

    def args_in(queue: str, level: str) -> list[object]:
        stream = f"{namespace}:{{{queue}}}:ready:{level}"
        return [msgspec.json.decode(f[b"args"])[0] for _, f in r.xrange(stream)]

    assert args_in("mail", "normal") == ["a@x", "b@x"]
    assert args_in("default", "high") == [2]
    assert sorted(args_in("default", "normal")) == [1, 3, 5]
    for job, sig in zip(jobs, sigs, strict=True):
        entry = job.id.split(":")[2]
        queue, code = job.id.split(":")[:2]
        level = {"n": "normal", "h": "high"}[code]
        (fields,) = [f for e, f in r.xrange(f"{namespace}:{{{queue}}}:ready:{level}", entry, entry)]
        if job.created:
            assert msgspec.json.decode(fields[b"args"]) == list(sig.args)


async def test_enqueue_many_async(app: Conveyor, r: redis.Redis, namespace: str) -> None:
    @app.task
    async def echo(x: int) -> int:
        return x

    jobs = await echo.enqueue_many_async([(i,) for i in range(700)])
    assert len({j.id for j in jobs}) == 700
    assert r.xlen(f"{namespace}:{{default}}:ready:normal") == 700
    await app.aclose()


def test_enqueue_in_is_scheduled_with_due_time_from_redis_clock(
    app: Conveyor, r: redis.Redis, namespace: str
) -> None:
    @app.task
    def later(x: int) -> int:
        return x

    before = redis_ms(r)
    job = later.enqueue_in(30, 5)
    job2 = later.enqueue_in(timedelta(minutes=2), 6)
    after = redis_ms(r)
    queue, code, token = job.id.split(":")
    assert (queue, code) == ("default", "d") and token
    info = job.info()
    assert info.state is JobState.SCHEDULED
    assert info.due_ms is not None
    assert before + 30_000 <= info.due_ms <= after + 30_000
    info2 = job2.info()
    assert info2.state is JobState.SCHEDULED
    assert info2.due_ms is not None
    assert before + 120_000 <= info2.due_ms <= after + 120_000

    delayed = f"{namespace}:{{default}}:delayed"
    assert r.zscore(delayed, job.id) == info.due_ms
    # nothing is in a ready stream yet
    assert r.exists(f"{namespace}:{{default}}:ready:normal") == 0
    payload = msgspec.json.decode(r.hget(f"{namespace}:{{default}}:payloads", job.id))
    assert payload["task"] == "later"
    assert payload["id"] == job.id
    assert msgspec.json.decode(payload["args"]) == [5]


async def test_enqueue_in_async_and_enqueue_at_async(app: Conveyor, r: redis.Redis) -> None:
    @app.task
    async def later(x: int) -> int:
        return x

    before = redis_ms(r)
    job = await later.enqueue_in_async(10, 1)
    after = redis_ms(r)
    info = await job.info_async()
    assert info.state is JobState.SCHEDULED
    assert info.due_ms is not None and before + 10_000 <= info.due_ms <= after + 10_000

    when = datetime(2099, 1, 2, 3, 4, 5, 678000, tzinfo=timezone.utc)
    job2 = await later.enqueue_at_async(when, 2)
    info2 = await job2.info_async()
    assert info2.state is JobState.SCHEDULED
    assert info2.due_ms == int(when.timestamp() * 1000)
    await app.aclose()


def test_enqueue_at_datetime_and_timestamp(app: Conveyor, r: redis.Redis, namespace: str) -> None:
    @app.task
    def at(x: int) -> int:
        return x

    aware = datetime(2099, 6, 1, 12, 0, 0, tzinfo=timezone(timedelta(hours=2)))
    naive = datetime(2099, 6, 1, 12, 0, 0)  # naive means UTC
    ts = 4_070_908_800.25  # 2099-01-01T00:00:00.25Z
    j1, j2, j3 = at.enqueue_at(aware, 1), at.enqueue_at(naive, 2), at.enqueue_at(ts, 3)
    delayed = f"{namespace}:{{default}}:delayed"
    assert r.zscore(delayed, j1.id) == int(aware.timestamp() * 1000)
    assert r.zscore(delayed, j2.id) == int(naive.replace(tzinfo=timezone.utc).timestamp() * 1000)
    assert r.zscore(delayed, j3.id) == 4_070_908_800_250
    for j in (j1, j2, j3):
        assert j.status() is JobState.SCHEDULED
    assert len({j1.id, j2.id, j3.id}) == 3


def test_priority_high_goes_to_the_high_stream(
    app: Conveyor, r: redis.Redis, namespace: str
) -> None:
    @app.task
    def work(x: int) -> int:
        return x

    job_h = work.using(priority="high").enqueue(1)
    job_l = work.using(priority="low").enqueue(2)
    job_n = work.enqueue(3)
    assert job_h.id.split(":")[:2] == ["default", "h"]
    assert job_l.id.split(":")[:2] == ["default", "l"]
    assert job_n.id.split(":")[:2] == ["default", "n"]
    prefix = f"{namespace}:{{default}}:ready:"
    assert r.xlen(prefix + "high") == 1
    assert r.xlen(prefix + "low") == 1
    assert r.xlen(prefix + "normal") == 1
    assert msgspec.json.decode(entry_of(r, prefix + "high", job_h.id.split(":")[2])[b"args"]) == [1]
    for j in (job_h, job_l, job_n):
        assert j.status() is JobState.QUEUED
    # the routed copy does not change the original task
    assert work.options.priority == "normal"


def test_task_priority_option_and_queue_routing(
    app: Conveyor, r: redis.Redis, namespace: str
) -> None:
    @app.task(priority="high", queue="mail")
    def notify(x: int) -> int:
        return x

    job = notify.enqueue(1)
    assert job.id.split(":")[:2] == ["mail", "h"]
    assert r.xlen(f"{namespace}:{{mail}}:ready:high") == 1
    other = notify.using(queue="reports").enqueue(2)
    assert other.id.split(":")[:2] == ["reports", "h"]
    assert r.xlen(f"{namespace}:{{reports}}:ready:high") == 1
    assert other.status() is JobState.QUEUED


def test_another_conveyor_instance_reads_the_same_status(
    app: Conveyor, redis_url: str, namespace: str
) -> None:
    @app.task
    def work(x: int) -> int:
        return x

    queued = work.enqueue(1)
    scheduled = work.enqueue_in(60, 2)
    other = Conveyor(redis_url, namespace=namespace)  # registers no tasks at all
    try:
        assert other.job(queued.id).status() is JobState.QUEUED
        assert other.job(scheduled.id).status() is JobState.SCHEDULED
        assert other.job(scheduled.id).info().due_ms == scheduled.info().due_ms
    finally:
        other.close()
    stranger = Conveyor(redis_url, namespace=namespace + "-other")
    try:
        assert stranger.job(queued.id).status() is JobState.UNKNOWN
    finally:
        stranger.close()


def test_status_of_valid_looking_unknown_ids_is_unknown(app: Conveyor) -> None:
    @app.task
    def work(x: int) -> int:
        return x

    # stream does not exist yet
    assert app.job("default:n:1700000000000-0").status() is JobState.UNKNOWN
    assert app.job("default:h:1-0").status() is JobState.UNKNOWN
    assert app.job("default:d:0123456789abcdef").status() is JobState.UNKNOWN
    work.enqueue(1)
    # stream exists, entry does not
    assert app.job("default:n:1-0").status() is JobState.UNKNOWN
    assert app.job("default:n:99999999999999-0").status() is JobState.UNKNOWN
    assert app.job("nosuchqueue:l:1700000000000-5").status() is JobState.UNKNOWN
    with pytest.raises(JobNotFound):
        app.job("default:n:1-0").result(timeout=1)


def test_status_of_id_with_garbage_entry_part_is_not_a_raw_redis_error(app: Conveyor) -> None:
    @app.task
    def work(x: int) -> int:
        return x

    work.enqueue(1)  # the normal stream exists, so the status script reaches XRANGE
    try:
        job = app.job("default:n:garbage")
    except ConfigurationError:
        return
    assert job.status() is JobState.UNKNOWN


def test_enqueue_non_json_args_raises_payload_error_and_adds_nothing(
    app: Conveyor, r: redis.Redis, namespace: str
) -> None:
    @app.task
    def work(x: object) -> None: ...

    for enqueue in (
        lambda: work.enqueue(object()),
        lambda: work.enqueue(1, extra={1, object()}),
        lambda: work.enqueue_in(5, object()),
        lambda: work.enqueue_at(time.time() + 60, object()),
        lambda: work.enqueue_many([(1,), (object(),), (3,)]),
        lambda: app.enqueue("work", object()),
    ):
        with pytest.raises(PayloadError) as info:
            enqueue()
        assert "JSON" in str(info.value)
    assert key_count(r, namespace) == 0


def test_enqueue_oversize_args_raises_payload_error_and_adds_nothing(
    redis_url: str, r: redis.Redis, namespace: str
) -> None:
    small = Conveyor(redis_url, namespace=namespace, max_payload_bytes=1000)
    try:

        @small.task
        def work(blob: str) -> None: ...

        with pytest.raises(PayloadError) as info:
            work.enqueue("x" * 2000)
        assert "1000-byte limit" in str(info.value)
        with pytest.raises(PayloadError):
            work.enqueue_in(1, "x" * 2000)
        assert key_count(r, namespace) == 0
        assert work.enqueue("x" * 100).status() is JobState.QUEUED
    finally:
        small.close()


def test_enqueue_of_unknown_task_name_raises_task_not_found(app: Conveyor) -> None:
    @app.task
    def known() -> None: ...

    with pytest.raises(LookupError) as info:
        app.enqueue("unknown")
    assert "known" in str(info.value)


def test_dead_redis_raises_connection_failed_naming_url_and_fix() -> None:
    url = "redis://127.0.0.1:1/0"
    dead = Conveyor(url, namespace="test-dead")

    @dead.task
    def work() -> None: ...

    started = time.monotonic()
    with pytest.raises(ConnectionFailed) as info:
        work.enqueue()
    elapsed = time.monotonic() - started
    text = str(info.value)
    assert url in text
    assert "redis-server" in text
    assert "CONVEYOR_REDIS_URL" in text
    assert elapsed < 15, f"gave up only after {elapsed:.1f}s"
    with pytest.raises(ConnectionFailed):
        dead.job("default:n:1-0").status()
    dead.close()


async def test_dead_redis_raises_connection_failed_async() -> None:
    url = "redis://127.0.0.1:1/0"
    dead = Conveyor(url, namespace="test-dead")

    @dead.task
    async def work() -> None: ...

    with pytest.raises(ConnectionFailed) as info:
        await work.enqueue_async()
    assert url in str(info.value)
    assert "redis-server" in str(info.value)
    await dead.aclose()


def test_connection_failed_message_hides_the_password() -> None:
    dead = Conveyor("redis://user:s3cret@127.0.0.1:1/0", namespace="test-dead")

    @dead.task
    def work() -> None: ...

    with pytest.raises(ConnectionFailed) as info:
        work.enqueue()
    assert "s3cret" not in str(info.value)
    assert "127.0.0.1:1" in str(info.value)
    dead.close()


def test_a_payload_exactly_at_the_limit_is_enqueued_and_runs_one_byte_over_is_refused(
    app: Conveyor, r: redis.Redis, namespace: str
) -> None:
    # Issue 8, item 2: the producer counted args + kwargs and the worker the whole entry,
    # so a payload at the producer's limit was accepted and then dead-lettered as malformed.
    # Both now count the same bytes: task name + JSON args + JSON kwargs <= max_bytes.
    from tests.conftest import worker_thread

    @app.task(name="fit")
    def fit(blob: str) -> int:
        return len(blob)

    limit = app.max_payload_bytes
    filler = limit - len("fit") - len('[""]') - len("{}")
    job = fit.enqueue("x" * filler)
    with worker_thread(app):
        assert job.result(timeout=30) == filler
    assert r.xlen(app.keys("default").dead) == 0
    with pytest.raises(PayloadError, match=f"{limit + 1} bytes of task name and arguments"):
        fit.enqueue("x" * (filler + 1))


@pytest.mark.parametrize(
    "delay",
    [float("nan"), float("inf"), float("-inf"), 1e300, timedelta.max],
)
def test_enqueue_in_with_a_delay_that_is_not_a_finite_time_is_a_clear_error(
    app: Conveyor, r: redis.Redis, namespace: str, delay: float | timedelta
) -> None:
    # nan raised ValueError and inf OverflowError from int(); now both say what to pass.
    @app.task
    def work() -> None: ...

    with pytest.raises(ConfigurationError, match="delay must be a finite number of seconds"):
        work.enqueue_in(delay)
    assert key_count(r, namespace) == 0


@pytest.mark.parametrize("when", [float("nan"), float("inf"), -5.0, "soon"])
def test_enqueue_at_with_a_time_that_is_not_a_finite_timestamp_is_a_clear_error(
    app: Conveyor, when: float
) -> None:
    @app.task
    def work() -> None: ...

    with pytest.raises(ConfigurationError, match=r"finite UNIX timestamp|datetime"):
        work.enqueue_at(when)


def test_a_negative_delay_means_due_now(app: Conveyor, r: redis.Redis) -> None:
    # Computed delays (deadline - now) may come out negative: like enqueue_at with a past
    # time, the job is due at once rather than refused.
    @app.task
    def work() -> None: ...

    before = redis_ms(r)
    job = work.enqueue_in(-30)
    due = r.zscore(app.keys("default").delayed, job.id)
    assert due is not None and before <= due <= redis_ms(r)


def test_a_10000_deep_argument_is_a_payload_error_not_a_recursion_error(
    app: Conveyor, r: redis.Redis, namespace: str
) -> None:
    @app.task
    def work(x: object) -> None: ...

    deep: list[object] = []
    for _ in range(10_000):
        deep = [deep]
    shallow: list[object] = []
    for _ in range(70):
        shallow = [shallow]
    for value in (deep, shallow):
        with pytest.raises(PayloadError, match="nested"):
            work.enqueue(value)
        with pytest.raises(PayloadError, match="nested"):
            work.enqueue_many([(value,)])
    assert key_count(r, namespace) == 0
    ok: list[object] = []
    for _ in range(62):
        ok = [ok]
    work.enqueue(ok)  # args array + 63 levels = 64: the worker's limit, accepted by both
