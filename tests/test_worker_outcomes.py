"""How a job ends, whatever it returns or however often it is retried (issue 8, 2, 4, 8).

A job keeps its id and its outcome through every retry, however large; results JSON cannot
carry fail at once; a signed copy of a job that already ended never runs again; every record
of an ended job expires.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis

from conveyor import (
    Backoff,
    Conveyor,
    JobFailed,
    JobState,
    ReplayRefused,
    dead_letters,
)
from conveyor.worker.outcomes import HISTORY_ERROR_CHARS, HISTORY_KEEP
from tests.conftest import fast, wait_until, worker_thread

KEY = b"test-key-0123456789abcdef"
ERROR_CHARS = 30_000


def record_keys_without_ttl(r: redis.Redis, namespace: str) -> list[bytes]:
    return [k for k in r.scan_iter(match=f"{namespace}:*job:*") if r.pttl(k) < 0]


def dead_fields(app: Conveyor) -> list[dict[bytes, bytes]]:
    return [f for _, f in app.broker.client.xrange(app.keys("default").dead)]


def test_a_near_limit_job_whose_retries_grow_its_history_runs_every_attempt_and_ends_dead(
    app: Conveyor, r: redis.Redis, namespace: str
) -> None:
    # Each retry used to append the whole 5,000-character error to the entry's history: the
    # third attempt's entry passed the 1 MiB limit and was dead-lettered as malformed under
    # the new entry's id, leaving the real record 'queued' forever and result() lost.
    # The entry may now exceed the argument limit by wire.ENTRY_OVERHEAD (64 KiB), so the
    # error is 30,000 characters: three unclipped copies would pass that allowance too.
    runs: list[int] = []

    @app.task(retries=3, backoff=Backoff(base=0.01, cap=0.05))
    def big(data: str) -> None:
        runs.append(len(data))
        raise ValueError("e" * ERROR_CHARS)

    job = big.enqueue("x" * 1_040_000)
    with worker_thread(app, fast(concurrency=2)):
        wait_until(lambda: job.status() is JobState.DEAD, 20, "the job to end dead")
        with pytest.raises(JobFailed) as failed:
            job.result(timeout=5)
    assert runs == [1_040_000] * 4
    assert failed.value.error is not None and "e" * ERROR_CHARS in failed.value.error
    [dead] = dead_fields(app)
    assert dead[b"dead_reason"] == b"failed"
    assert dead[b"id"].decode() == job.id
    history = app.broker.client.xrange(app.keys("default").dead)[0][1][b"dead_history"]
    attempts = json.loads(history)
    assert [a["attempt"] for a in attempts] == [1, 2, 3, 4]
    assert all(len(a["error"]) <= HISTORY_ERROR_CHARS for a in attempts)
    assert record_keys_without_ttl(r, namespace) == []


def test_history_keeps_the_last_attempts_only(app: Conveyor) -> None:
    @app.task(retries=HISTORY_KEEP + 2, backoff=Backoff(base=0.01, cap=0.02))
    def flaky() -> None:
        raise RuntimeError("again")

    job = flaky.enqueue()
    with worker_thread(app, fast(concurrency=2)):
        wait_until(lambda: job.status() is JobState.DEAD, 30, "the job to end dead")
    [dead] = dead_fields(app)
    attempts = json.loads(dead[b"dead_history"])
    assert [a["attempt"] for a in attempts] == list(range(4, HISTORY_KEEP + 4))


@pytest.mark.parametrize("value", [object(), float("nan")], ids=["object", "nan"])
def test_a_result_json_cannot_carry_fails_at_once_without_retries(
    app: Conveyor, r: redis.Redis, namespace: str, value: Any
) -> None:
    runs: list[int] = []

    @app.task(retries=3, backoff=Backoff(base=0.01, cap=0.02))
    def odd() -> Any:
        runs.append(1)
        return value

    job = odd.enqueue()
    with worker_thread(app, fast(concurrency=2)):
        wait_until(lambda: job.status() is JobState.DEAD, 10, "the job to end dead")
        with pytest.raises(JobFailed, match="cannot be stored as JSON"):
            job.result(timeout=5)
    assert runs == [1]
    [dead] = dead_fields(app)
    assert dead[b"dead_reason"] == b"bad_result"
    assert record_keys_without_ttl(r, namespace) == []


def test_a_malformed_retry_is_dead_lettered_under_the_job_id_it_carries(
    app: Conveyor, r: redis.Redis, namespace: str
) -> None:
    keys = app.keys("default")
    job_id = "default:d:0123456789abcdef"
    r.set(keys.record(job_id), b'{"state":"queued","level":"normal","entry":"1-0"}')
    r.xadd(
        keys.stream("normal"),
        {"version": 1, "task": "t", "args": "[1", "kwargs": "{}", "id": job_id},
    )

    @app.task
    def t(n: int) -> int:
        return n

    with worker_thread(app, fast(concurrency=2)):
        wait_until(lambda: app.job(job_id).status() is JobState.DEAD, 10, "the job to end")
    [dead] = dead_fields(app)
    assert dead[b"dead_reason"] == b"malformed"
    assert dead[b"id"].decode() == job_id
    assert record_keys_without_ttl(r, namespace) == []


def test_a_signed_copy_of_a_job_that_ended_is_not_run_again(
    redis_url: str, namespace: str, r: redis.Redis
) -> None:
    app = Conveyor(redis_url, namespace=namespace, signing_keys=[KEY])
    runs: list[int] = []

    @app.task
    def double(n: int) -> int:
        runs.append(n)
        return 2 * n

    try:
        job = double.enqueue(21)
        stream = app.keys("default").stream("normal")
        with worker_thread(app, fast(concurrency=2)):
            assert job.result(timeout=10) == 42
            record = r.get(app.keys("default").record(job.id))
            [(_, original)] = r.xrange(stream)
            r.xadd(stream, original)  # type: ignore[arg-type]  # an unchanged, validly signed copy
            wait_until(lambda: r.xlen(app.keys("default").dead) == 1, 10, "the copy rejected")
        assert runs == [21]
        [dead] = dead_fields(app)
        assert dead[b"dead_reason"] == b"replayed_ended_job"
        assert dead[b"id"].decode() == job.id
        assert r.get(app.keys("default").record(job.id)) == record  # untouched
        assert job.result(timeout=1) == 42
        # Replaying the copy would put it back under the ended job's id: refused.
        [(dead_entry, _)] = r.xrange(app.keys("default").dead)
        with pytest.raises(ReplayRefused, match="is a copy of job"):
            dead_letters.replay(app, "default", dead_entry.decode())
        assert r.get(app.keys("default").record(job.id)) == record
    finally:
        app.close()


@pytest.mark.parametrize("signed", [False, True])
def test_a_retry_keeps_the_options_its_entry_carried(
    redis_url: str, namespace: str, r: redis.Redis, signed: bool
) -> None:
    """A unique key held until done is freed when the job ends after a retry, and the
    ``expires`` field survives the move through the delayed set."""
    app = Conveyor(redis_url, namespace=namespace, signing_keys=[KEY] if signed else None)
    attempts: list[int] = []

    @app.task(retries=2, backoff=Backoff(base=0.01), expires=600)
    def flaky() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("first attempt fails")
        return "ok"

    try:
        job = flaky.using(unique_key="until-done", unique_for=None).enqueue()
        unique = app.keys("default").unique("until-done")
        assert r.exists(unique)
        with worker_thread(app, fast(concurrency=2)):
            assert job.result(timeout=10) == "ok"
            wait_until(lambda: not r.exists(unique), 5, "the unique key freed by the ending")
        assert len(attempts) == 2
        retried = [f for _, f in r.xrange(app.keys("default").stream("normal")) if b"id" in f]
        assert retried and all(f[b"expires"] == b"600000" for f in retried)
        assert all(f[b"unique"] == b"until-done" for f in retried)
    finally:
        app.close()
