"""The `conveyor` command, run as a real subprocess against a real Redis.

Every command is ``python -m conveyor ...`` from the project root with CONVEYOR_REDIS_URL and
TEST_NAMESPACE set, so ``tests.cliapp:app`` (see that module) lives in the test's namespace.
Workers are real ``conveyor worker`` processes, stopped with SIGTERM (then killed, with their
children) when a test ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis

from conveyor import Conveyor, JobState
from conveyor.keys import GROUP
from tests.cliapp import register_tasks
from tests.conftest import worker_thread

ROOT = Path(__file__).resolve().parent.parent
APP = "tests.cliapp:app"
JOB_ID = re.compile(r"^default:n:\d+-\d+$")
T = TypeVar("T")


# ------------------------------------------------------------------------------ helpers
def cli_env(redis_url: str, namespace: str) -> dict[str, str]:
    return {
        **os.environ,
        "CONVEYOR_REDIS_URL": redis_url,
        "TEST_NAMESPACE": namespace,
        "PYTHONUNBUFFERED": "1",
        "COLUMNS": "250",  # rich tables: no truncated ids
    }


def run_cli(
    env: dict[str, str], *args: str, timeout: float = 30, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conveyor", *args],
        cwd=ROOT,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def describe(p: subprocess.CompletedProcess[str]) -> str:
    return f"exit {p.returncode}\n--- stdout\n{p.stdout}\n--- stderr\n{p.stderr}"


def wait_for(check: Callable[[], T | None], timeout: float, what: str | Callable[[], str]) -> T:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout} s waiting for {what() if callable(what) else what}"
            )
        time.sleep(0.1)


def children_of(pid: int) -> list[int]:
    """Pids whose parent is ``pid``, read from /proc/*/stat."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        if int(fields[1]) == pid:
            out.append(int(entry))
    return out


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


class CliWorker:
    """``conveyor worker SPEC ...`` in a subprocess; its output goes to a log file."""

    def __init__(self, env: dict[str, str], log_path: Path, *args: str) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "conveyor", "worker", *args],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.pid = self.proc.pid
        self._seen_children: set[int] = set()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def worker_pids(self) -> list[int]:
        """The worker child processes (multiprocessing spawn), not the resource tracker."""
        pids = [p for p in children_of(self.pid) if "spawn_main" in cmdline(p) and alive(p)]
        self._seen_children.update(pids)
        return sorted(pids)

    def wait_ready(self, processes: int = 1, timeout: float = 20) -> list[int]:
        """Wait until ``processes`` workers logged their start; returns the child pids."""

        def ready() -> list[int] | None:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited early ({self.proc.returncode}):\n{self.log()}")
            started = re.findall(r"\[(\d+)\] worker \S+ on ", self.log())
            pids = self.worker_pids()
            if len(pids) == processes and all(str(p) in started for p in pids):
                return pids
            return None

        return wait_for(ready, timeout, lambda: f"{processes} worker(s) to start:\n{self.log()}")

    def stop(self, timeout: float) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"supervisor pid {self.pid} still running {timeout} s after SIGTERM:\n{self.log()}"
            ) from None

    def close(self) -> None:
        """Kill what is left: the supervisor and any child of it this object has seen."""
        if self.proc.poll() is None:
            self.worker_pids()
            self.proc.kill()
            self.proc.wait(10)
        for pid in self._seen_children:
            if alive(pid) and "spawn_main" in cmdline(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self._log.close()


@contextlib.contextmanager
def cli_worker(
    env: dict[str, str], log_path: Path, *args: str, processes: int = 1
) -> Iterator[CliWorker]:
    w = CliWorker(env, log_path, *args)
    try:
        w.wait_ready(processes)
        yield w
    finally:
        if w.proc.poll() is None:
            with contextlib.suppress(AssertionError):
                w.stop(15)
        w.close()


def assert_clean_error(p: subprocess.CompletedProcess[str], *needles: str) -> None:
    """Exit code != 0, each needle in stderr, and no Python traceback anywhere."""
    assert p.returncode != 0, describe(p)
    assert "Traceback" not in p.stderr and "Traceback" not in p.stdout, describe(p)
    for needle in needles:
        assert needle in p.stderr, f"{needle!r} not in stderr:\n{describe(p)}"


# ------------------------------------------------------------------------------ fixtures
@pytest.fixture
def env(redis_url: str, namespace: str) -> dict[str, str]:
    return cli_env(redis_url, namespace)


@pytest.fixture
def tasks(app: Conveyor) -> dict[str, Any]:
    return register_tasks(app)


WORKER_ARGS = (APP, "-c", "4", "-p", "1", "--lease", "2", "--grace", "5")


# ------------------------------------------------------------------------------ enqueue, status
def test_enqueue_prints_job_id_and_status_follows_it_to_done(
    env: dict[str, str], tmp_path: Path
) -> None:
    p = run_cli(env, "enqueue", APP, "add", "--args", "[2, 3]")
    assert p.returncode == 0, describe(p)
    job_id = p.stdout.strip()
    assert JOB_ID.match(job_id), describe(p)

    queued = run_cli(env, "status", job_id, "--app", APP)
    assert queued.returncode == 0, describe(queued)
    assert json.loads(queued.stdout) == {"id": job_id, "state": "queued"}

    with cli_worker(env, tmp_path / "worker.log", *WORKER_ARGS):

        def done() -> dict[str, Any] | None:
            s = run_cli(env, "status", job_id, "--app", APP)
            assert s.returncode == 0, describe(s)
            out: dict[str, Any] = json.loads(s.stdout)
            return out if out["state"] == "done" else None

        out = wait_for(done, 15, f"job {job_id} to be done")
        assert out["result"] == 5
        assert out["task"] == "add"
        assert out["attempt"] == 1

        waited = run_cli(
            env, "enqueue", APP, "add", "--kwargs", '{"a": 20, "b": 22}', "--wait", "10"
        )
        assert waited.returncode == 0, describe(waited)
        lines = waited.stdout.split()
        assert len(lines) == 2 and JOB_ID.match(lines[0]), describe(waited)
        assert json.loads(lines[1]) == 42


def test_status_of_an_unknown_job_id_exits_2_with_state_unknown(
    env: dict[str, str], namespace: str
) -> None:
    p = run_cli(env, "--namespace", namespace, "status", "default:n:1-0")
    assert p.returncode == 2, describe(p)
    assert json.loads(p.stdout) == {"id": "default:n:1-0", "state": "unknown"}


def test_status_of_a_malformed_job_id_is_a_clean_error(env: dict[str, str], namespace: str) -> None:
    p = run_cli(env, "--namespace", namespace, "status", "not-a-job-id")
    assert_clean_error(p, "not-a-job-id")


# ------------------------------------------------------------------------------ clean errors
@pytest.mark.parametrize(
    ("spec", "needles"),
    [
        ("nosuch.module:app", ("cannot import module 'nosuch.module'", "PYTHONPATH")),
        ("tests.cliapp:nope", ("has no attribute 'nope'",)),
        ("tests.cliapp:os", ("is a module, not a Conveyor app",)),
        ("tests.cliapp:settings", ("is a dict, not a Conveyor app",)),
    ],
)
def test_worker_with_a_bad_app_path_exits_with_a_clear_error(
    env: dict[str, str], spec: str, needles: tuple[str, ...]
) -> None:
    p = run_cli(env, "worker", spec, timeout=20)
    assert_clean_error(p, *needles)


def test_enqueue_of_an_unknown_task_lists_the_registered_ones(env: dict[str, str]) -> None:
    p = run_cli(env, "enqueue", APP, "nosuch")
    assert_clean_error(p, "no task named 'nosuch'", "registered: add, fail, flaky, slow")


@pytest.mark.parametrize(
    ("option", "value", "needle"),
    [
        ("--args", "[1,", "not valid JSON"),
        ("--args", '{"a": 1}', "must be a JSON array"),
        ("--args", "3", "must be a JSON array"),
        ("--kwargs", "[1, 2]", "must be a JSON object"),
    ],
)
def test_enqueue_with_bad_json_arguments_is_a_usage_error(
    env: dict[str, str], namespace: str, redis_url: str, option: str, value: str, needle: str
) -> None:
    p = run_cli(env, "enqueue", APP, "add", option, value)
    assert_clean_error(p, option, needle)
    assert p.returncode == 2, describe(p)  # click's usage-error code
    client = redis.Redis.from_url(redis_url)
    try:
        assert list(client.scan_iter(match=f"{namespace}:*")) == [], "nothing may be enqueued"
    finally:
        client.close()


@pytest.mark.parametrize(
    "command",
    [
        ("worker", APP),
        ("enqueue", APP, "add", "--args", "[1, 2]"),
        ("stats", "--json"),
        ("dead", "ls"),
    ],
    ids=["worker", "enqueue", "stats", "dead-ls"],
)
def test_unreachable_redis_names_the_url_and_how_to_start_redis(
    env: dict[str, str], command: tuple[str, ...]
) -> None:
    start = time.monotonic()
    p = run_cli(env, "--url", "redis://127.0.0.1:1/0", *command, timeout=40)
    assert_clean_error(p, "redis://127.0.0.1:1/0", "redis-server", "CONVEYOR_REDIS_URL")
    assert time.monotonic() - start < 30, "giving up on an unreachable Redis must be quick"


# ------------------------------------------------------------------------------ stats
def test_stats_reports_ready_running_delayed_and_dead_counts(
    app: Conveyor, tasks: dict[str, Any], r: redis.Redis, env: dict[str, str], namespace: str
) -> None:
    # one dead job, left by a worker that then stopped (and left the group)
    with worker_thread(app) as w:
        dead = tasks["fail"].enqueue()
        wait_for(lambda: dead.status() is JobState.DEAD, 10, "the fail job to die")
        assert w.counts["dead"] == 1
    # 4 queued jobs, of which a consumer 'ghost' takes one (running), and 1 delayed job
    for i in range(4):
        tasks["add"].enqueue(i, i)
    stream = app.keys("default").stream("normal")
    assert r.xreadgroup(GROUP, "ghost", {stream: ">"}, count=1)
    tasks["add"].enqueue_in(3600, 1, 1)

    p = run_cli(env, "--namespace", namespace, "stats", "--json")
    assert p.returncode == 0, describe(p)
    assert json.loads(p.stdout) == [
        {"queue": "default", "ready": 3, "running": 1, "delayed": 1, "dead": 1, "consumers": 1}
    ]

    table = run_cli(env, "--namespace", namespace, "stats")
    assert table.returncode == 0, describe(table)
    row = next((line for line in table.stdout.splitlines() if "default" in line), "")
    # queue, ready, running, delayed, dead, consumers, stream length (5 entries + the dead job's)
    assert re.findall(r"\w+", row) == ["default", "3", "1", "1", "1", "1", "5"], describe(table)


def test_stats_of_an_empty_namespace_prints_an_empty_list(
    env: dict[str, str], namespace: str
) -> None:
    p = run_cli(env, "--namespace", namespace, "stats", "--json")
    assert p.returncode == 0, describe(p)
    assert json.loads(p.stdout) == []


# ------------------------------------------------------------------------------ dead letters
def test_dead_ls_show_replay_purge_on_a_failed_job(
    env: dict[str, str], namespace: str, r: redis.Redis, app: Conveyor, tmp_path: Path
) -> None:
    keys = app.keys("default")
    with cli_worker(env, tmp_path / "worker.log", *WORKER_ARGS) as worker:
        p = run_cli(env, "enqueue", APP, "fail", "--wait", "10")
        assert_clean_error(p, "failed: RuntimeError: fail always fails")
        job_id = p.stdout.strip()
        assert JOB_ID.match(job_id), describe(p)
        [(raw_entry, _)] = r.xrange(keys.dead)
        entry = raw_entry.decode()

        ls = run_cli(env, "dead", "ls", "--app", APP)
        assert ls.returncode == 0, describe(ls)
        row = next((line for line in ls.stdout.splitlines() if entry in line), "")
        assert job_id in row and " fail " in row and " failed " in row, describe(ls)
        assert "RuntimeError: fail always fails" in row, describe(ls)

        show = run_cli(env, "--namespace", namespace, "dead", "show", entry)
        assert show.returncode == 0, describe(show)
        shown = dict(line.split(": ", 1) for line in show.stdout.splitlines() if ": " in line)
        assert shown["id"] == job_id
        assert shown["task"] == "fail"
        assert shown["dead_reason"] == "failed"
        assert shown["dead_error"] == "RuntimeError: fail always fails"
        assert shown["dead_traceback"].startswith("Traceback"), describe(show)
        assert "raise RuntimeError" in show.stdout, describe(show)

        before = {e for e, _ in r.xrange(keys.stream("normal"))}
        replay = run_cli(env, "dead", "replay", entry, "--app", APP)
        assert replay.returncode == 0, describe(replay)
        assert f"replayed {entry} as job {job_id}" in replay.stdout, describe(replay)
        assert "1 job(s) replayed" in replay.stdout, describe(replay)
        new = [(e, f) for e, f in r.xrange(keys.stream("normal")) if e not in before]
        assert len(new) == 1, new
        fields = {k.decode(): v.decode() for k, v in new[0][1].items()}
        assert fields["id"] == job_id and fields["task"] == "fail" and fields["attempt"] == "1"
        assert not any(k.startswith("dead_") for k in fields), fields

        again = run_cli(env, "dead", "replay", entry, "--app", APP)
        assert again.returncode == 0, describe(again)
        assert "not in the dead-letter stream" in again.stderr, describe(again)
        assert "0 job(s) replayed" in again.stdout, describe(again)

        # the worker runs the replayed job, which dies again: a new dead entry, same job id
        def died_again() -> list[Any]:
            return [(e, f) for e, f in r.xrange(keys.dead) if e != raw_entry]

        [(second, dead_fields)] = wait_for(died_again, 10, lambda: f"re-death:\n{worker.log()}")
        assert dead_fields[b"id"].decode() == job_id
        assert dead_fields[b"attempt"] == b"1" and dead_fields[b"dead_reason"] == b"failed"
        assert r.xlen(keys.dead) == 1, "the replayed entry must have left the dead stream"

        declined = run_cli(env, "dead", "purge", "--app", APP, stdin="n\n")
        assert declined.returncode != 0, describe(declined)
        assert r.xlen(keys.dead) == 1, "purge without confirmation must delete nothing"

        purge = run_cli(env, "--namespace", namespace, "dead", "purge", "--yes")
        assert purge.returncode == 0, describe(purge)
        assert "1 dead job(s) deleted" in purge.stdout, describe(purge)
        assert r.xlen(keys.dead) == 0

        empty = run_cli(env, "dead", "ls", "--app", APP)
        assert empty.returncode == 0, describe(empty)
        assert job_id not in empty.stdout and second.decode() not in empty.stdout


def test_dead_replay_without_ids_or_all_is_a_usage_error(env: dict[str, str]) -> None:
    p = run_cli(env, "dead", "replay", "--app", APP)
    assert_clean_error(p, "--all")
    assert p.returncode == 2, describe(p)
