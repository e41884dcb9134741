"""Worker configuration without code, and the switches of `conveyor worker`.

The precedence (flag > CONVEYOR_* > app defaults > built-in; for the URL flag > code > env) is
checked end to end with real `conveyor worker` processes on a real Redis, as are --burst,
--max-jobs, --max-memory, --reload and --log-format json. Only pids these tests started (or
their children) are ever signalled.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import redis

from conveyor import ConfigurationError, Conveyor, Leases, WorkerSettings
from conveyor.logs import JsonFormatter
from conveyor.stats import queue_stats
from conveyor.worker import Worker
from conveyor.worker.reload import FileWatcher
from conveyor.worker_config import SETTINGS, SettingError, resolve
from tests.conftest import fast
from tests.test_cli import ROOT, assert_clean_error, cli_env, describe, run_cli, wait_for
from tests.workercfg_app import DEFAULTS, ledger_key

APP = "tests.workercfg_app:app"
#: nothing listens there: a layer that loses must not be the one used
DEAD_URL = "redis://127.0.0.1:1/0"
RELOAD_ARGS = ("--reload", "--grace", "2", "--block-ms", "100")


# ------------------------------------------------------------------------------ helpers
def worker_run(
    env: dict[str, str], *args: str, url: str | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """`conveyor [--url URL] worker ...` to its end (burst runs end by themselves)."""
    pre = ("--url", url) if url else ()
    return run_cli(env, *pre, "worker", *args, "--log-format", "json", timeout=timeout)


def records(p: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    """The JSON log lines of a run; any other line on stderr fails the test."""
    out = []
    for line in p.stderr.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"not a JSON log line: {line!r}\n{describe(p)}") from None
    return out


def ledger(r: redis.Redis, namespace: str) -> list[tuple[int, int]]:
    """(n, pid) for every run of tests.workercfg_app's record task."""
    return [
        (int(n), int(pid))
        for n, pid in (x.decode().split(":") for x in r.lrange(ledger_key(namespace), 0, -1))
    ]


def assert_drained(app: Conveyor) -> None:
    s = queue_stats(app, "default")
    assert (s.ready, s.running, s.delayed) == (0, 0, 0), s


@pytest.fixture
def env(redis_url: str, namespace: str) -> dict[str, str]:
    e = cli_env(redis_url, namespace)
    for s in SETTINGS:  # a CONVEYOR_* variable of the machine must not leak into the runs
        e.pop(s.env, None)
    e.update(WORKERCFG_CODE_URL=redis_url)
    return e


@pytest.fixture
def wapp(redis_url: str, namespace: str) -> Any:
    """The test's handle on tests.workercfg_app's tasks, bound to the test's namespace."""
    import tests.workercfg_app as module

    module.app.rebind(url=redis_url, namespace=namespace)
    yield module
    module.app.close()


# ------------------------------------------------------------------------------ precedence
def test_resolve_takes_flag_then_environment_then_app_then_builtin() -> None:
    app_defaults = WorkerSettings(concurrency=4, shutdown_grace=7.0, leases=Leases(timeout=12.0))
    environ = {"CONVEYOR_CONCURRENCY": "5", "CONVEYOR_GRACE": "6", "CONVEYOR_PREFETCH": "auto"}
    got = resolve(app_defaults, {"concurrency": 3, "queues": None}, environ)
    s = got.settings
    assert (s.concurrency, s.shutdown_grace, s.leases.timeout, s.block_ms) == (3, 6.0, 12.0, 2000)
    assert s.prefetch is None and s.queues is None
    assert got.sources["concurrency"] == "--concurrency"
    assert got.sources["shutdown_grace"] == "CONVEYOR_GRACE"
    assert got.sources["leases.timeout"] == "app"
    assert got.sources["block_ms"] == "default"
    assert got.sources["prefetch"] == "CONVEYOR_PREFETCH"
    # nested fields keep their siblings from the layer below
    s = resolve(
        WorkerSettings(leases=Leases(timeout=9.0, reclaim_every=2.0)), {"lease": 3.0}
    ).settings
    assert s.leases == Leases(timeout=3.0, reclaim_every=2.0)
    s = resolve(WorkerSettings(), {}, {"CONVEYOR_QUEUES": "a, b", "CONVEYOR_BURST": "yes"}).settings
    assert s.queues == ("a", "b") and s.burst is True


#: a valid value, other than the built-in default, for each field, as a variable would hold it
SAMPLES = {
    "queues": ("a,b", ("a", "b")),
    "concurrency": ("7", 7),
    "prefetch": ("3", 3),
    "leases.timeout": ("9.5", 9.5),
    "leases.reclaim_every": ("2", 2.0),
    "retention.keep_count": ("77", 77),
    "retention.keep_seconds": ("60", 60.0),
    "retention.trim_every": ("1.5", 1.5),
    "retention.max_trim": ("99", 99),
    "shutdown_grace": ("4", 4.0),
    "block_ms": ("250", 250),
    "promote_every": ("0.5", 0.5),
    "max_payload_bytes": ("2048", 2048),
    "pool_size": ("3", 3),
    "burst": ("true", True),
    "max_jobs": ("100", 100),
    "max_memory_mb": ("512", 512.0),
}


def _leaves(obj: Any, prefix: str = "") -> set[str]:
    out = set()
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            out |= _leaves(value, f"{prefix}{f.name}.")
        else:
            out.add(prefix + f.name)
    return out


def test_every_worker_settings_field_has_a_flag_and_a_variable() -> None:
    from conveyor.cli.worker import worker

    assert {s.path for s in SETTINGS} == _leaves(WorkerSettings()) == set(SAMPLES)
    options = {opt for p in worker.params for opt in p.opts}
    for s in SETTINGS:
        raw, value = SAMPLES[s.path]
        assert s.flag in options and s.env == "CONVEYOR_" + s.flag[2:].upper().replace("-", "_")
        got = resolve(WorkerSettings(), {}, {s.env: raw})
        assert got.sources[s.path] == s.env
        settings: Any = got.settings
        for part in s.path.split("."):
            settings = getattr(settings, part)
        assert settings == value, s.path


@pytest.mark.parametrize(
    ("flags", "environ", "needles"),
    [
        ({"max_jobs": 0}, {}, ["--max-jobs=0", "max_jobs must be an int >= 1"]),
        ({}, {"CONVEYOR_MAX_JOBS": "0"}, ["CONVEYOR_MAX_JOBS=0", "max_jobs"]),
        (
            {},
            {"CONVEYOR_CONCURRENCY": "many"},
            ["CONVEYOR_CONCURRENCY='many'", "not a valid integer"],
        ),
        ({}, {"CONVEYOR_LEASE": "0.1"}, ["CONVEYOR_LEASE=0.1", "Leases.timeout must be >= 0.3"]),
        ({}, {"CONVEYOR_PREFETCH": "lots"}, ["CONVEYOR_PREFETCH='lots'", "'auto'"]),
        ({}, {"CONVEYOR_MAX_MEMORY": "-5"}, ["CONVEYOR_MAX_MEMORY=-5.0", "max_memory_mb"]),
    ],
)
def test_bad_setting_names_where_it_came_from(
    flags: dict[str, Any], environ: dict[str, str], needles: list[str]
) -> None:
    with pytest.raises(SettingError) as caught:
        resolve(WorkerSettings(), flags, environ)
    for needle in needles:
        assert needle in str(caught.value)


def test_app_worker_defaults_are_what_a_worker_uses(app: Conveyor) -> None:
    custom = Conveyor(app.url, namespace=app.namespace, worker=WorkerSettings(concurrency=2))
    try:
        assert Worker(custom).settings.concurrency == 2
        assert Worker(custom, WorkerSettings(concurrency=6)).settings.concurrency == 6
    finally:
        custom.close()
    with pytest.raises(ConfigurationError, match="WorkerSettings"):
        Conveyor(worker={"concurrency": 2})  # type: ignore[arg-type]


def test_precedence_end_to_end_flag_env_app_builtin_and_the_url(
    env: dict[str, str], redis_url: str, namespace: str, wapp: Any, r: redis.Redis
) -> None:
    """One real `conveyor worker` per URL rule; each setting from a different layer.

    concurrency: flag 3 beats CONVEYOR_CONCURRENCY=5 and the app's 4; shutdown_grace:
    CONVEYOR_GRACE=6 beats the app's 7; leases.timeout: the app's 12 beats the built-in 30;
    retention.trim_every: nobody sets it, built-in 5. URL: --url beats the code's and the
    environment's (both dead); without --url the code's beats the environment's (dead).
    """
    env.update(CONVEYOR_CONCURRENCY="5", CONVEYOR_GRACE="6", CONVEYOR_REDIS_URL=DEAD_URL)
    expected = {"concurrency": 3, "shutdown_grace": 6.0, "burst": True}
    for run, (code_url, flag_url) in enumerate([(DEAD_URL, redis_url), (redis_url, None)]):
        jobs = [wapp.record.enqueue(run * 10 + i) for i in range(3)]
        p = worker_run(
            {**env, "WORKERCFG_CODE_URL": code_url}, APP, "-c", "3", "--burst", url=flag_url
        )
        assert p.returncode == 0, describe(p)
        logs = records(p)
        parent = next(x for x in logs if "sources" in x)
        assert parent["sources"]["concurrency"] == "--concurrency"
        assert parent["sources"]["shutdown_grace"] == "CONVEYOR_GRACE"
        assert parent["sources"]["leases.timeout"] == "app"
        assert parent["sources"]["retention.trim_every"] == "default"
        child = next(x for x in logs if "settings" in x and x["pid"] != parent["pid"])
        settings = child["settings"]
        assert {k: settings[k] for k in expected} == expected
        assert settings["leases"]["timeout"] == DEFAULTS.leases.timeout == 12.0
        assert settings["retention"]["keep_count"] == 500  # the app's, untouched
        assert settings["retention"]["trim_every"] == WorkerSettings().retention.trim_every
        assert redis_url in child["message"] and DEAD_URL not in child["message"]
        assert all(j.result(timeout=5) for j in jobs)
    assert sorted(n for n, _ in ledger(r, namespace)) == [0, 1, 2, 10, 11, 12]


# ------------------------------------------------------------------------------ bad input
def test_bad_switches_are_refused_with_a_clear_error(env: dict[str, str]) -> None:
    p = run_cli(env, "worker", APP, "--max-jobs", "0")
    assert p.returncode == 2
    assert_clean_error(p, "--max-jobs", "max_jobs must be an int >= 1", "unset")
    p = run_cli(env, "worker", APP, "--reload", "-p", "4")
    assert p.returncode == 2
    assert_clean_error(p, "--reload is for development and runs one worker process")
    p = run_cli({**env, "CONVEYOR_CONCURRENCY": "many"}, "worker", APP)
    assert_clean_error(p, "CONVEYOR_CONCURRENCY='many'", "not a valid integer")


# ------------------------------------------------------------------------------ switches
def test_burst_exits_zero_once_queues_and_delayed_set_are_empty(
    env: dict[str, str], namespace: str, wapp: Any, r: redis.Redis
) -> None:
    now = [wapp.record.enqueue(i) for i in range(6)]
    later = wapp.record.enqueue_in(1.0, 100)
    retried = wapp.fails_once.enqueue(200)  # its retry waits in the delayed set
    started = time.monotonic()
    p = worker_run(env, APP, "-p", "2", "--burst")
    took = time.monotonic() - started
    assert p.returncode == 0, describe(p)
    assert took >= 0.9, "exited before the delayed job was due"
    assert "every worker process drained its queues" in p.stderr
    assert all(j.status() == "done" for j in [*now, later, retried])
    assert sorted(n for n, _ in ledger(r, namespace)) == [0, 1, 2, 3, 4, 5, 100, 200]
    assert_drained(wapp.app)


async def test_burst_worker_in_process_returns_when_drained(app: Conveyor) -> None:
    @app.task
    async def double(x: int) -> int:
        return 2 * x

    jobs = [await double.enqueue_async(i) for i in range(5)]
    worker = Worker(app, fast(burst=True))
    await asyncio.wait_for(worker.run(), 20)
    assert worker.lifetime.reason == "drained"
    assert [await j.result_async(timeout=1) for j in jobs] == [0, 2, 4, 6, 8]


def test_max_jobs_restarts_processes_under_the_supervisor_and_loses_nothing(
    env: dict[str, str], namespace: str, wapp: Any, r: redis.Redis
) -> None:
    jobs = [wapp.record.enqueue(i) for i in range(12)]
    p = worker_run(env, APP, "-p", "2", "-c", "2", "--max-jobs", "4", "--burst", timeout=60)
    assert p.returncode == 0, describe(p)
    runs = ledger(r, namespace)
    assert sorted(n for n, _ in runs) == list(range(12)), "a job was lost or ran twice"
    per_pid = Counter(pid for _, pid in runs)
    # a process stops taking jobs at its 4th; its other slot may finish one more
    assert max(per_pid.values()) <= 4 + 1, per_pid
    assert len(per_pid) >= 3, per_pid
    recycled = p.stderr.count("reached its job or memory limit; starting a fresh one")
    assert recycled >= 2, describe(p)
    assert "exited with" not in p.stderr, "a recycle must not look like a crash"
    assert all(j.status() == "done" for j in jobs)
    assert_drained(wapp.app)


def test_max_memory_restarts_a_process_that_grew(
    env: dict[str, str], namespace: str, wapp: Any, r: redis.Redis
) -> None:
    big = wapp.grow.enqueue(200, 1.3)  # 200 MB held, past the limit for 1.3 s
    small = [wapp.record.enqueue(i) for i in range(3)]
    p = worker_run(env, APP, "-c", "1", "--max-memory", "150", "--burst", timeout=60)
    assert p.returncode == 0, describe(p)
    assert "(max_memory)" in p.stderr and "starting a fresh one" in p.stderr, describe(p)
    grown = big.result(timeout=1)
    assert sorted(n for n, _ in ledger(r, namespace)) == [0, 1, 2]
    # the jobs fetched behind the big one were handed back and run by the fresh process
    assert {pid for _, pid in ledger(r, namespace)} != {grown}
    assert all(j.status() == "done" for j in small)


def test_reload_restarts_the_worker_when_a_file_changes(
    env: dict[str, str], app: Conveyor, tmp_path: Path
) -> None:
    module = tmp_path / "reloadapp.py"
    source = (
        "import os\nfrom conveyor import Conveyor\n"
        "app = Conveyor(namespace=os.environ['TEST_NAMESPACE'])\n"
        "@app.task\ndef version() -> str:\n    return {v!r}\n"
    )
    module.write_text(source.format(v="v1"))

    @app.task(name="version")
    def version() -> str:
        raise AssertionError("runs in the reloaded worker only")

    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "conveyor", "worker", "reloadapp:app", *RELOAD_ARGS],
            cwd=tmp_path,
            env={**env, "PYTHONPATH": str(ROOT)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        assert version.enqueue().result(timeout=15) == "v1"
        module.write_text(source.format(v="v2"))
        st = module.stat()
        os.utime(module, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
        wait_for(
            lambda: log_path.read_text().count("started worker process 0") >= 2,
            15,
            lambda: f"the restart after the change:\n{log_path.read_text()}",
        )
        assert "reloadapp.py changed: restarting" in log_path.read_text()
        assert version.enqueue().result(timeout=15) == "v2"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0, log_path.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


# ------------------------------------------------------------------------------ units
def test_file_watcher_sees_edits_additions_and_skips_virtualenvs(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("x = 1\n")
    venv = tmp_path / "venv"
    venv.mkdir()
    (venv / "pyvenv.cfg").write_text("")
    (venv / "lib.py").write_text("")
    watcher = FileWatcher([tmp_path], interval=0)
    assert watcher.changed() is None
    (venv / "lib.py").write_text("changed = True\n")
    assert watcher.changed() is None
    (tmp_path / "a.py").write_text("x = 22\n")  # a new size: seen within any mtime tick
    assert watcher.changed() == str(tmp_path / "a.py")
    assert watcher.changed() is None
    (tmp_path / "b.py").write_text("")
    assert watcher.changed() == str(tmp_path / "b.py")


def test_json_log_lines_carry_exception_and_extras() -> None:
    logger = logging.getLogger("conveyor.test")
    record = logger.makeRecord(
        "conveyor.test",
        logging.ERROR,
        __file__,
        1,
        "job %s failed",
        ("j1",),
        None,
        extra={"settings": {"concurrency": 3}, "odd": object()},
    )
    try:
        raise ValueError("boom")
    except ValueError:
        record.exc_info = sys.exc_info()
    line = JsonFormatter().format(record)
    assert "\n" not in line
    doc = json.loads(line)
    assert doc["message"] == "job j1 failed" and doc["level"] == "ERROR"
    assert doc["settings"] == {"concurrency": 3} and doc["odd"].startswith("<object")
    assert "ValueError: boom" in doc["exception"] and doc["pid"] == os.getpid()
    assert doc["time"].endswith("+00:00")
