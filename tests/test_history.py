"""Processing history: finished jobs stay readable with their state, and can be run again."""

from __future__ import annotations

import subprocess
import sys

from conveyor import Conveyor, JobState
from conveyor.history import recent, replay
from tests.conftest import worker_thread


def test_history_lists_recent_jobs_with_state_and_replays_one(app: Conveyor) -> None:
    seen: list[int] = []

    @app.task
    def square(n: int) -> int:
        seen.append(n)
        return n * n

    jobs = [square.enqueue(n) for n in range(5)]
    pending = square.using(queue="elsewhere").enqueue(99)  # another queue: not in this history
    with worker_thread(app):
        assert [j.result(timeout=10) for j in jobs] == [0, 1, 4, 9, 16]
        rows = recent(app, "default", limit=3)
        assert [r.job_id for r in rows] == [j.id for j in reversed(jobs[-3:])]
        assert all(r.info.state is JobState.DONE and r.task == "square" for r in rows)
        again = replay(app, "default", rows[0].level, rows[0].entry_id)
        assert again is not None and again != rows[0].job_id
        assert app.job(again).result(timeout=10) == 16
    assert seen.count(4) == 2
    assert pending.status() is JobState.QUEUED


def test_history_cli_prints_the_table(app: Conveyor, redis_url: str) -> None:
    @app.task
    def hello() -> str:
        return "hi"

    job = hello.enqueue()
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "conveyor",
            "--url",
            redis_url,
            "--namespace",
            app.namespace,
            "history",
            "-n",
            "5",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert job.id.split(":")[-1] in out and "hello" in out and "queued" in out


def test_replay_of_a_queued_or_running_job_is_refused_unless_forced(
    app: Conveyor, redis_url: str
) -> None:
    import pytest
    import redis

    from conveyor import ReplayRefused
    from conveyor.keys import GROUP

    @app.task
    def work(n: int) -> int:
        return n

    queued = work.enqueue(1)
    entry = queued.id.split(":")[-1]
    with pytest.raises(ReplayRefused, match=r"is queued, not ended.*--force"):
        replay(app, "default", "normal", entry)
    stream = app.keys("default").stream("normal")
    assert app.broker.client.xlen(stream) == 1, "a refused replay adds nothing"

    cli = [sys.executable, "-m", "conveyor", "--url", redis_url, "--namespace", app.namespace]
    p = subprocess.run(
        [*cli, "history", "replay", entry], capture_output=True, text=True, timeout=60
    )
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
    assert p.stderr.strip().splitlines() == [
        f"Error: job {queued.id} is queued, not ended; a replay now would run it twice. "
        "Wait until it is done or dead, or pass --force"
    ]

    client = redis.Redis.from_url(redis_url)
    try:
        client.xgroup_create(stream, GROUP, id="0")
        client.xreadgroup(GROUP, "ghost", {stream: ">"}, count=1)  # a worker now runs it
    finally:
        client.close()
    assert queued.status() is JobState.RUNNING
    with pytest.raises(ReplayRefused, match="is running"):
        replay(app, "default", "normal", entry)

    forced = subprocess.run(
        [*cli, "history", "replay", entry, "--force"], capture_output=True, text=True, timeout=60
    )
    assert forced.returncode == 0, forced.stderr
    assert app.job(forced.stdout.strip()).status() is JobState.QUEUED
    assert app.broker.client.xlen(stream) == 2


def test_a_signed_replay_gets_an_id_of_its_own_and_runs_once(
    redis_url: str, namespace: str
) -> None:
    signed = Conveyor(redis_url, namespace=namespace, signing_keys=["k" * 32])
    runs: list[int] = []

    @signed.task
    def double(n: int) -> int:
        runs.append(n)
        return 2 * n

    try:
        first = double.enqueue(21)
        with worker_thread(signed):
            assert first.result(timeout=10) == 42
            row = next(r for r in recent(signed, "default", limit=5) if r.job_id == first.id)
            again = replay(signed, "default", row.level, row.entry_id)
            assert again is not None and again != first.id
            assert signed.job(again).result(timeout=10) == 42
            entries = signed.broker.client.xrange(signed.keys("default").stream("normal"))
            replayed = [f for _, f in entries if f.get(b"id") == again.encode()]
            assert len(replayed) == 1, "the replay carries its own signed id"
        assert runs == [21, 21]
    finally:
        signed.close()
