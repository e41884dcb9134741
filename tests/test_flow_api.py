"""Issue 11 as the API, the producer and the CLI show it: cancel in each state that needs no
worker, progress read back, the new job states and errors, the option fields an entry
carries (and that a plain entry carries none), and bad options refused at decoration.

Everything runs against a real Redis; the worker side of each feature is tested elsewhere.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
import redis

from conveyor import (
    CancelOutcome,
    ConfigurationError,
    Conveyor,
    JobCancelled,
    JobExpired,
    JobNotFound,
    JobState,
    Progress,
)
from conveyor import progress as progress_mod
from conveyor.broker import command, operations
from conveyor.cli.jobs import describe
from conveyor.expiry import expire
from conveyor.keys import GROUP
from conveyor.signing import Signer
from tests.cliapp import register_tasks
from tests.conftest import fast, wait_until, worker_thread
from tests.test_cli import cli_env, run_cli

APP = "tests.cliapp:app"


@pytest.fixture
def env(redis_url: str, namespace: str) -> dict[str, str]:
    return cli_env(redis_url, namespace)


@pytest.fixture
def tasks(app: Conveyor) -> dict[str, Any]:
    return register_tasks(app)


def _entry(r: redis.Redis, app: Conveyor, job_id: str) -> dict[bytes, bytes]:
    entry = job_id.split(":")[2]
    [(_, fields)] = r.xrange(app.keys("default").stream("normal"), entry, entry)
    return dict(fields)


# ------------------------------------------------------------------------------ cancel
def test_cancel_a_queued_job_ends_it_cancelled_and_result_raises(
    app: Conveyor, tasks: dict[str, Any], r: redis.Redis
) -> None:
    job = tasks["add"].enqueue(1, 2)
    result = job.cancel("not needed")
    assert result.outcome is CancelOutcome.WILL_SKIP and result.stopped
    assert job.status() is JobState.CANCELLED and JobState.CANCELLED.finished
    with pytest.raises(JobCancelled, match="not needed") as raised:
        job.result(timeout=2)
    assert raised.value.job_id == job.id
    # The entry is not deleted before its turn: XINFO lag stays true.
    assert r.xlen(app.keys("default").stream("normal")) == 1
    again = job.cancel()
    assert again.outcome is CancelOutcome.ALREADY_ENDED and again.detail == "cancelled"


def test_cancel_a_delayed_job_removes_it_from_the_delayed_set(
    app: Conveyor, tasks: dict[str, Any], r: redis.Redis
) -> None:
    job = tasks["add"].enqueue_in(60, 1, 2)
    assert job.status() is JobState.SCHEDULED
    assert job.cancel().outcome is CancelOutcome.CANCELLED
    keys = app.keys("default")
    assert r.zcard(keys.delayed) == 0 and r.hlen(keys.payloads) == 0
    assert job.status() is JobState.CANCELLED


def test_cancel_async_twin(app: Conveyor, tasks: dict[str, Any]) -> None:
    async def go() -> CancelOutcome:
        job = await tasks["add"].enqueue_async(1, 2)
        outcome = (await job.cancel_async()).outcome
        with pytest.raises(JobCancelled):
            await job.result_async(timeout=2)
        await app.aclose()
        return outcome

    assert asyncio.run(go()) is CancelOutcome.WILL_SKIP


def test_cancel_a_finished_job_is_a_no_op_that_says_so(
    app: Conveyor, tasks: dict[str, Any]
) -> None:
    job = tasks["add"].enqueue(2, 3)
    with worker_thread(app, fast()):
        assert job.result(timeout=10) == 5
    result = job.cancel()
    assert result.outcome is CancelOutcome.ALREADY_ENDED and result.detail == "done"
    assert job.result(timeout=1) == 5, "a cancel after the end changes nothing"
    assert "already ended as done" in describe(job.id, result)


def test_cancel_an_unknown_job_is_a_clear_error(app: Conveyor) -> None:
    with pytest.raises(JobNotFound, match="conveyor status"):
        app.job("default:n:1-1").cancel()


def test_cli_cancel_says_what_happened_in_each_state(
    app: Conveyor, tasks: dict[str, Any], env: dict[str, str]
) -> None:
    queued = tasks["add"].enqueue(1, 1)
    delayed = tasks["add"].enqueue_in(60, 1, 1)
    p = run_cli(env, "cancel", queued.id, "--app", APP)
    assert p.returncode == 0 and p.stdout.strip() == (
        f"cancelled {queued.id}: it was queued; it will be skipped when a worker reads it"
    ), p
    p = run_cli(env, "cancel", delayed.id, "--app", APP, "--reason", "obsolete")
    assert p.returncode == 0 and "never will" in p.stdout and len(p.stdout.splitlines()) == 1
    assert delayed.info().reason == "obsolete"
    p = run_cli(env, "cancel", queued.id, "--app", APP)
    assert p.returncode == 0
    assert p.stdout.strip() == f"nothing to cancel: {queued.id} already ended as cancelled"
    p = run_cli(env, "cancel", "default:n:1-1", "--app", APP)
    assert p.returncode == 1 and p.stdout == ""
    assert len(p.stderr.strip().splitlines()) == 1 and "cannot cancel job" in p.stderr, p
    p = run_cli(env, "status", queued.id, "--app", APP)
    assert json.loads(p.stdout)["state"] == "cancelled"


# ------------------------------------------------------------------------------ progress
def test_progress_reads_the_latest_report_and_status_shows_it(
    app: Conveyor, tasks: dict[str, Any], env: dict[str, str]
) -> None:
    job = tasks["add"].enqueue(1, 2)
    assert job.progress() is None
    keys = app.keys("default")
    app.broker.call(progress_mod.report(keys, job.id, 0.2, "step 1 of 5", ttl_ms=60_000))
    at = app.broker.call(progress_mod.report(keys, job.id, 0.4, "step 2 of 5", ttl_ms=60_000))
    shown = job.progress()
    assert shown == Progress(0.4, "step 2 of 5", at)
    assert asyncio.run(_aprogress(app, job.id)) == shown
    status = json.loads(run_cli(env, "status", job.id, "--app", APP).stdout)
    assert status["progress"]["fraction"] == 0.4
    assert status["progress"]["message"] == "step 2 of 5"
    assert status["progress"]["at"].startswith(time.strftime("%Y-", time.gmtime(at / 1000)))


async def _aprogress(app: Conveyor, job_id: str) -> Progress | None:
    try:
        return await app.job(job_id).progress_async()
    finally:
        await app.aclose()


# ------------------------------------------------------------------------------ expiry
def test_a_job_expired_by_its_option_shows_expired_with_its_reason(
    app: Conveyor, tasks: dict[str, Any], r: redis.Redis, env: dict[str, str]
) -> None:
    job = tasks["add"].using(expires=0.001).enqueue(1, 2)
    keys = app.keys("default")
    stream = keys.stream("normal")
    app.broker.call(operations.ensure_group(stream))
    [(_, [(entry, fields)])] = r.xreadgroup(GROUP, "c1", {stream: ">"})
    assert fields[b"expires"] == b"1"
    time.sleep(0.01)
    assert app.broker.call(expire(keys, "c1", "normal", entry.decode(), job.id, 1, ttl_ms=60_000))
    info = job.info()
    assert info.state is JobState.EXPIRED and info.expired_by_option
    assert info.reason and info.reason.startswith("expires")
    with pytest.raises(JobExpired, match="expires"):
        job.result(timeout=1)
    status = json.loads(run_cli(env, "status", job.id, "--app", APP).stdout)
    assert status["state"] == "expired" and status["expired_by"] == "expires option"


# ------------------------------------------------------------------------------ entry fields
def test_a_plain_enqueue_carries_no_option_fields(
    app: Conveyor, tasks: dict[str, Any], r: redis.Redis
) -> None:
    job = tasks["add"].enqueue(1, 2)
    fields = _entry(r, app, job.id)
    assert b"expires" not in fields and b"unique" not in fields
    assert set(fields) == {b"task", b"args", b"kwargs", b"enqueued_at"}


def test_expires_is_written_in_ms_from_the_task_option_and_from_using(
    app: Conveyor, r: redis.Redis
) -> None:
    @app.task(expires=2.5)
    def report(n: int) -> int:
        return n

    assert _entry(r, app, report.enqueue(1).id)[b"expires"] == b"2500"
    assert _entry(r, app, report.using(expires=10).enqueue(1).id)[b"expires"] == b"10000"
    assert b"expires" not in _entry(r, app, report.using(expires=None).enqueue(1).id)
    bulk = report.enqueue_many([(1,), (2,)])
    assert [_entry(r, app, j.id)[b"expires"] for j in bulk] == [b"2500", b"2500"]
    delayed = report.enqueue_in(60, 1)
    payload = json.loads(r.hget(app.keys("default").payloads, delayed.id) or b"{}")
    assert payload["expires"] == "2500"


def test_unique_until_done_holds_the_key_without_ttl_and_names_it_in_the_entry(
    app: Conveyor, tasks: dict[str, Any], r: redis.Redis
) -> None:
    keys = app.keys("default")
    first = tasks["add"].using(unique_key="report-7", unique_for=None).enqueue(1, 2)
    again = tasks["add"].using(unique_key="report-7", unique_for=None).enqueue(1, 2)
    assert first.created and not again.created and again.id == first.id
    assert r.ttl(keys.unique("report-7")) == -1, "held until the job ends, not for a window"
    assert _entry(r, app, first.id)[b"unique"] == b"report-7"
    windowed = tasks["add"].using(unique_key="w", unique_for=30).enqueue(1, 2)
    assert b"unique" not in _entry(r, app, windowed.id), "a window ends by itself"
    assert 0 < r.ttl(keys.unique("w")) <= 30
    later = tasks["add"].using(unique_key="d", unique_for=None).enqueue_in(60, 1, 2)
    assert r.ttl(keys.unique("d")) == -1
    assert json.loads(r.hget(keys.payloads, later.id) or b"{}")["unique"] == "d"


def test_unique_until_done_is_freed_when_a_cancel_ends_the_job(
    app: Conveyor, tasks: dict[str, Any], r: redis.Redis
) -> None:
    job = tasks["add"].using(unique_key="once", unique_for=None).enqueue(1, 2)
    job.cancel()
    assert r.exists(app.keys("default").unique("once")) == 0
    assert tasks["add"].using(unique_key="once", unique_for=None).enqueue(1, 2).created


def test_option_fields_of_a_signed_job_are_covered_by_its_signature(
    redis_url: str, namespace: str, r: redis.Redis
) -> None:
    key = "k" * 32
    app = Conveyor(redis_url, namespace=namespace, signing_keys=[key])
    try:

        @app.task(expires=5)
        def signed(n: int) -> int:
            return n

        job = signed.using(unique_key="s", unique_for=None).enqueue(1)
        record = json.loads(r.get(app.keys("default").record(job.id)) or b"{}")
        [(_, fields)] = r.xrange(app.keys("default").stream("normal"), record["entry"], "+")
        text = {k.decode(): v.decode() for k, v in fields.items()}
        assert text["expires"] == "5000" and text["unique"] == "s"
        raw = dict(fields)
        assert Signer([key]).verify(raw, "default", "normal")
        tampered = {**raw, b"expires": b"999999"}
        assert not Signer([key]).verify(tampered, "default", "normal")
    finally:
        app.close()


# ------------------------------------------------------------------------------ bad input
def _async_task() -> Any:
    async def fetch_page() -> None:
        return None

    return fetch_page


def module_level_sync() -> int:
    return 1


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"rate": "fast"}, "rate"),
        ({"concurrency": 0}, "concurrency"),
        ({"expires": -1}, "expires"),
        ({"executor": "gpu"}, "executor"),
        ({"rate_burst": 0, "rate": "5/s"}, "rate_burst"),
        ({"rate_key": lambda x: x}, "rate_key needs a rate"),
    ],
)
def test_bad_flow_options_are_refused_at_decoration_naming_the_option(
    app: Conveyor, options: dict[str, Any], needle: str
) -> None:
    with pytest.raises(ConfigurationError, match=needle):
        app.task(**options)(module_level_sync)
    assert "module_level_sync" not in app.tasks


def test_process_executor_refuses_an_async_function_and_a_lambda(app: Conveyor) -> None:
    with pytest.raises(ConfigurationError, match=r"executor='process'.*async"):
        app.task(executor="process")(_async_task())
    with pytest.raises(ConfigurationError, match="executor='process'"):
        app.task(executor="process", name="lam")(lambda: None)
    assert app.tasks == {}
    ok = app.task(executor="process")(module_level_sync)
    assert ok.options.executor == "process"


def test_bad_using_options_are_refused(app: Conveyor, tasks: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError, match="expires"):
        tasks["add"].using(expires=0)
    with pytest.raises(ConfigurationError, match="unique_for"):
        tasks["add"].using(unique_key="k", unique_for=-1)


def test_cancel_keys_and_progress_keys_share_the_queue_slot(app: Conveyor) -> None:
    keys = app.keys("default")
    assert keys.cancelled == f"{app.namespace}:{{default}}:cancelled"
    assert keys.progress("default:n:1-0") == f"{app.namespace}:{{default}}:progress:default:n:1-0"
    assert app.broker.call(command("EXISTS", keys.cancelled, keys.progress("x"))) == 0


def test_flow_names_are_public(app: Conveyor) -> None:
    import conveyor

    for name in ("JobCancelled", "JobExpired", "CancelOutcome", "CancelResult", "Progress"):
        assert name in conveyor.__all__
    assert wait_until is not None
