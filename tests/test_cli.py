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

from conveyor import Conveyor, JobState, ReplayRefused
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
    out = json.loads(p.stdout)
    assert out["namespace"] == namespace and out["workers"] == []  # the worker has stopped
    assert out["queues"] == [
        {
            "queue": "default",
            "ready": 3,
            "running": 1,
            "delayed": 1,
            "dead": 1,
            "consumers": 1,
            "length": 5,
            "workers": 0,
        }
    ]

    table = run_cli(env, "--namespace", namespace, "stats")
    assert table.returncode == 0, describe(table)
    row = next((line for line in table.stdout.splitlines() if "default" in line), "")
    # queue, ready, running, delayed, dead, consumers, live workers, stream length
    assert re.findall(r"\w+", row) == ["default", "3", "1", "1", "1", "1", "0", "5"], describe(
        table
    )


def test_stats_of_an_empty_namespace_prints_an_empty_list(
    env: dict[str, str], namespace: str
) -> None:
    p = run_cli(env, "--namespace", namespace, "stats", "--json")
    assert p.returncode == 0, describe(p)
    assert json.loads(p.stdout) == {"namespace": namespace, "queues": [], "workers": []}


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


# ------------------------------------------------------------------------------ URL precedence
UNREACHABLE = "redis://127.0.0.1:1/0"
EXPLICIT = "tests.cliapp:explicit"


def test_app_url_in_code_beats_conveyor_redis_url_and_the_flag_beats_both(
    env: dict[str, str], redis_url: str, app: Conveyor
) -> None:
    code_wins = {**env, "CONVEYOR_REDIS_URL": UNREACHABLE, "CLIAPP_URL": redis_url}
    p = run_cli(code_wins, "enqueue", EXPLICIT, "add", "--args", "[1, 2]")
    assert p.returncode == 0, describe(p)
    assert app.job(p.stdout.strip()).status() is JobState.QUEUED

    flag_wins = {**env, "CONVEYOR_REDIS_URL": UNREACHABLE, "CLIAPP_URL": UNREACHABLE}
    p = run_cli(flag_wins, "--url", redis_url, "enqueue", EXPLICIT, "add", "--args", "[3, 4]")
    assert p.returncode == 0, describe(p)
    assert app.job(p.stdout.strip()).status() is JobState.QUEUED


def test_without_an_app_conveyor_redis_url_beats_redis_url(
    env: dict[str, str], redis_url: str, namespace: str, app: Conveyor, tasks: dict[str, Any]
) -> None:
    job = tasks["add"].enqueue(1, 1)
    base = {k: v for k, v in env.items() if k not in ("CONVEYOR_REDIS_URL", "REDIS_URL")}
    for extra in (
        {"CONVEYOR_REDIS_URL": redis_url, "REDIS_URL": UNREACHABLE},
        {"REDIS_URL": redis_url},
    ):
        p = run_cli({**base, **extra}, "--namespace", namespace, "status", job.id)
        assert p.returncode == 0, f"{extra}: {describe(p)}"
        assert json.loads(p.stdout)["state"] == "queued"
    p = run_cli(
        {**base, "CONVEYOR_REDIS_URL": UNREACHABLE, "REDIS_URL": redis_url},
        "--namespace",
        namespace,
        "status",
        job.id,
        timeout=40,
    )
    assert_clean_error(p, UNREACHABLE)


def test_worker_children_serve_the_url_in_the_apps_code(
    env: dict[str, str], redis_url: str, tmp_path: Path, tasks: dict[str, Any]
) -> None:
    code_wins = {**env, "CONVEYOR_REDIS_URL": UNREACHABLE, "CLIAPP_URL": redis_url}
    job = tasks["add"].enqueue(20, 22)
    args = (EXPLICIT, "-c", "2", "-p", "2", "--lease", "2", "--grace", "5")
    with cli_worker(code_wins, tmp_path / "worker.log", *args, processes=2) as worker:
        assert job.result(timeout=15) == 42, worker.log()
        assert UNREACHABLE not in worker.log()


# ------------------------------------------------------------------------------ namespaces
def test_status_of_a_job_in_another_namespace_says_where_it_looked_and_how_to_choose(
    env: dict[str, str], namespace: str, tasks: dict[str, Any]
) -> None:
    job = tasks["add"].enqueue(1, 2)
    no_ns = {k: v for k, v in env.items() if k != "CONVEYOR_NAMESPACE"}
    p = run_cli(no_ns, "status", job.id)
    assert p.returncode == 2, describe(p)
    assert json.loads(p.stdout) == {"id": job.id, "state": "unknown"}
    for needle in ("namespace 'conveyor'", "--namespace", "--app", "CONVEYOR_NAMESPACE"):
        assert needle in p.stderr, describe(p)

    honoured = run_cli({**no_ns, "CONVEYOR_NAMESPACE": namespace}, "status", job.id)
    assert honoured.returncode == 0, describe(honoured)
    assert json.loads(honoured.stdout)["state"] == "queued"
    stats_out = run_cli({**no_ns, "CONVEYOR_NAMESPACE": namespace}, "stats", "--json")
    assert stats_out.returncode == 0, describe(stats_out)
    assert json.loads(stats_out.stdout)["namespace"] == namespace


# ------------------------------------------------------------------------------ one-line errors
def invoke(env: dict[str, str], *args: str) -> Any:
    """The `conveyor` command in-process (click's CliRunner): output, exit code, exception."""
    from click.testing import CliRunner

    from conveyor.cli import main

    return CliRunner().invoke(main, list(args), env=env)


def assert_one_line(result: Any, code: int, *needles: str) -> None:
    shown = f"exit {result.exit_code}\n{result.output}"
    assert result.exit_code == code, shown
    assert isinstance(result.exception, SystemExit), f"{result.exception!r}\n{shown}"
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, shown
    assert "Traceback" not in result.output, shown
    for needle in needles:
        assert needle in errors[0], f"{needle!r} not in {errors[0]!r}"


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (("dead", "show", "nope"), 2, "not a stream entry id: 'nope'"),
        (("dead", "replay", "garbage"), 2, "not a stream entry id: 'garbage'"),
        (("history", "replay", "x-1"), 2, "not a stream entry id: 'x-1'"),
        (("dead", "show", "99999999999999999999-0"), 2, "not a stream entry id"),
        (("status", "default:n:99999999999999999999-0"), 1, "99999999999999999999"),
        (("--log-level", "loud", "stats"), 2, "'loud' is not one of"),
        (("--url", "redis://127.0.0.1:6379/99", "stats"), 1, "DB index"),
    ],
    ids=[
        "dead-show",
        "dead-replay",
        "history-replay",
        "entry-beyond-64-bits",
        "status-20-digits",
        "log-level",
        "db-index",
    ],
)
def test_bad_input_is_one_line_not_a_traceback(
    env: dict[str, str], namespace: str, args: tuple[str, ...], code: int, needle: str
) -> None:
    assert_one_line(invoke(env, "--namespace", namespace, *args), code, needle)


def test_a_deeply_nested_args_document_is_a_usage_error(env: dict[str, str]) -> None:
    # In a subprocess: a RecursionError inside the test process can upset the interpreter.
    deep = "[" * 10_000 + "]" * 10_000
    p = run_cli(env, "enqueue", APP, "add", "--args", deep)
    assert_clean_error(p, "--args", "nested too deeply")
    errors = [line for line in p.stderr.splitlines() if line.startswith("Error:")]
    assert p.returncode == 2 and len(errors) == 1, describe(p)


def test_a_redis_error_reply_is_one_line(
    env: dict[str, str], namespace: str, app: Conveyor, r: redis.Redis
) -> None:
    r.set(app.keys("default").dead, "not a stream")
    result = invoke(env, "--namespace", namespace, "dead", "ls")
    assert_one_line(result, 1, "refused the command", "WRONGTYPE")


def test_a_url_that_is_not_redis_is_one_line(env: dict[str, str]) -> None:
    import http.server
    import threading

    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"redis://127.0.0.1:{server.server_address[1]}/0"
        assert_one_line(invoke(env, "--url", url, "stats"), 1, url, "is that address a Redis")
    finally:
        server.shutdown()
        server.server_close()


def test_enqueue_with_arguments_that_do_not_match_the_signature_is_refused(
    env: dict[str, str], namespace: str, r: redis.Redis
) -> None:
    for args in (("--args", "[1]"), ("--args", '["x", 2]'), ("--kwargs", '{"a": 1, "c": 2}')):
        p = run_cli(env, "enqueue", APP, "add", *args)
        assert_clean_error(p, "add")
        assert p.returncode == 1 and len(p.stderr.strip().splitlines()) == 1, describe(p)
    assert list(r.scan_iter(match=f"{namespace}:*")) == [], "nothing may be enqueued"


# ------------------------------------------------------------------------------ tables, stats
def narrow(env: dict[str, str]) -> dict[str, str]:
    return {**env, "COLUMNS": "80"}


def add_dead(r: redis.Redis, app: Conveyor, task: str, reason: str, n: int) -> tuple[str, str]:
    """A dead-letter entry as the worker writes it; returns (entry id, job id)."""
    job_id = f"default:n:{1_700_000_000_000 + n}-{n}"
    entry = r.xadd(
        app.keys("default").dead,
        {
            "version": "1",
            "id": job_id,
            "task": task,
            "args": "[]",
            "kwargs": "{}",
            "enqueued_at": "1700000000000",
            "attempt": "3",
            "dead_reason": reason,
            "dead_error": f"RuntimeError: {task} went wrong in a long and winding way " * 2,
            "dead_from": f"normal:{1_700_000_000_000 + n}-{n}",
        },
    )
    return entry.decode(), job_id


def test_ids_are_never_cut_in_a_narrow_terminal(
    env: dict[str, str], namespace: str, app: Conveyor, r: redis.Redis, tasks: dict[str, Any]
) -> None:
    entry, job_id = add_dead(r, app, "a_task_with_a_rather_long_name", "bad_arguments", 1)
    dead = run_cli(narrow(env), "--namespace", namespace, "dead", "ls")
    assert dead.returncode == 0, describe(dead)
    assert any(entry in line and job_id in line for line in dead.stdout.splitlines()), describe(
        dead
    )

    job = tasks["add"].enqueue(123456789, 987654321)
    stream_entry = job.id.split(":")[-1]
    hist = run_cli(narrow(env), "--namespace", namespace, "history")
    assert hist.returncode == 0, describe(hist)
    lines = hist.stdout.splitlines()
    assert any(stream_entry in line and job.id in line for line in lines), describe(hist)

    long_queue = "a-queue-with-a-name-of-forty-characters-"
    tasks["add"].using(queue=long_queue).enqueue(1, 2)
    stats_out = run_cli(narrow(env), "--namespace", namespace, "stats")
    assert stats_out.returncode == 0, describe(stats_out)
    assert any(long_queue in line for line in stats_out.stdout.splitlines()), describe(stats_out)


def test_stats_json_has_stream_length_and_live_workers(
    env: dict[str, str], namespace: str, app: Conveyor, r: redis.Redis, tasks: dict[str, Any]
) -> None:
    from conveyor.broker import run_script
    from conveyor.keys import worker_key, workers_key

    tasks["add"].enqueue(1, 2)
    tasks["add"].using(queue="other").enqueue(1, 2)
    info = {"host": "h", "pid": 1, "queues": ["default"], "held": 0}
    app.broker.call(
        run_script(
            "heartbeat",
            [workers_key(namespace), worker_key(namespace, "w1")],
            ["w1", json.dumps(info), 60_000],
        )
    )
    r.zadd(workers_key(namespace), {"gone": int(time.time() * 1000)})  # its info key expired
    p = run_cli(env, "--namespace", namespace, "stats", "--json")
    assert p.returncode == 0, describe(p)
    out = json.loads(p.stdout)
    assert out["workers"] == [{"id": "w1", **info}]
    by_queue = {q["queue"]: q for q in out["queues"]}
    assert by_queue["default"]["length"] == 1 and by_queue["default"]["workers"] == 1
    assert by_queue["other"]["length"] == 1 and by_queue["other"]["workers"] == 0


def test_stats_json_watch_prints_one_document_per_line_until_interrupted(
    env: dict[str, str], namespace: str, tasks: dict[str, Any]
) -> None:
    tasks["add"].enqueue(1, 2)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "conveyor",
            "--namespace",
            namespace,
            "stats",
            "--json",
            "--watch",
            "0.2",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        docs = [json.loads(proc.stdout.readline()) for _ in range(2)]
        assert [d["queues"][0]["ready"] for d in docs] == [1, 1], docs
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
        assert proc.returncode == 0 and "Traceback" not in err, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# ------------------------------------------------------------------------------ dead filters
def test_dead_ls_and_replay_filter_by_task_and_reason(
    env: dict[str, str], namespace: str, app: Conveyor, r: redis.Redis
) -> None:
    keys = app.keys("default")
    _, j1 = add_dead(r, app, "alpha", "failed", 1)
    _, j2 = add_dead(r, app, "alpha", "bad_arguments", 2)
    e3, j3 = add_dead(r, app, "beta", "failed", 3)
    ns = ("--namespace", namespace)

    ls = run_cli(env, *ns, "dead", "ls", "--task", "alpha", "--reason", "failed")
    assert ls.returncode == 0, describe(ls)
    assert j1 in ls.stdout and j2 not in ls.stdout and j3 not in ls.stdout, describe(ls)
    ls = run_cli(env, *ns, "dead", "ls", "--reason", "failed")
    assert j1 in ls.stdout and j3 in ls.stdout and j2 not in ls.stdout, describe(ls)

    none = run_cli(env, *ns, "dead", "replay", "--task", "gamma")
    assert_clean_error(none, "no dead job", "'gamma'")
    assert none.returncode == 1 and r.xlen(keys.dead) == 3

    skipped = run_cli(env, *ns, "dead", "replay", e3, "--task", "alpha")
    assert skipped.returncode == 0 and "does not match" in skipped.stderr, describe(skipped)
    assert r.xlen(keys.dead) == 3

    replay = run_cli(env, *ns, "dead", "replay", "--reason", "failed")
    assert replay.returncode == 0, describe(replay)
    assert "2 job(s) replayed" in replay.stdout, describe(replay)
    assert [f[b"dead_reason"] for _, f in r.xrange(keys.dead)] == [b"bad_arguments"]
    ready = [f for _, f in r.xrange(keys.stream("normal"))]
    assert sorted(f[b"id"].decode() for f in ready) == sorted([j1, j3])
    assert all(f[b"attempt"] == b"1" and b"dead_reason" not in f for f in ready), ready


def test_dead_replay_re_signs_a_signed_job_and_refuses_a_forged_one(
    redis_url: str, namespace: str, r: redis.Redis
) -> None:
    from conveyor import dead_letters

    signed = Conveyor(redis_url, namespace=namespace, signing_keys=["k" * 32])
    assert signed.signer is not None
    keys = signed.keys("default")
    try:
        job = register_tasks(signed)["add"].enqueue(1, 2)
        [(entry, fields)] = r.xrange(keys.stream("normal"))
        dead_from = f"normal:{entry.decode()}"
        good = r.xadd(keys.dead, {**fields, "dead_reason": "failed", "dead_from": dead_from})
        forged_fields = {**fields, b"args": b"[666, 0]"}
        forged = r.xadd(keys.dead, {**forged_fields, "dead_reason": "failed"})

        with pytest.raises(ReplayRefused, match="valid signature"):
            dead_letters.replay(signed, "default", forged.decode())
        assert dead_letters.replay(signed, "default", good.decode()) == job.id
        [(_, replayed)] = r.xrange(keys.stream("normal"), f"({entry.decode()}", "+")
        assert replayed[b"attempt"] == b"1" and replayed[b"args"] == fields[b"args"]
        assert signed.signer.verify(replayed, "default", "normal"), "the worker must accept it"
    finally:
        signed.close()


# ------------------------------------------------------------------------------ Redis Cluster
#: the Cluster and Sentinel session fixtures (until tests/conftest.py lists them)


def test_the_cli_runs_on_redis_cluster_through_the_url_flag(
    cluster: Any, namespace: str, tmp_path: Path
) -> None:
    """``--url redis+cluster://...`` beats CONVEYOR_REDIS_URL for enqueue, worker, status
    and stats; the cleanup visits every master."""
    env = cli_env("redis://127.0.0.1:1/0", namespace)  # wrong on purpose: the flag wins
    url = ("--url", cluster.url)
    p = run_cli(env, *url, "enqueue", APP, "add", "--args", "[2, 3]")
    assert p.returncode == 0, describe(p)
    job_id = p.stdout.strip()
    cleanup = Conveyor(cluster.url, namespace=namespace)
    try:
        worker_env = {**env, "CONVEYOR_REDIS_URL": cluster.url}
        with cli_worker(worker_env, tmp_path / "worker.log", *WORKER_ARGS):

            def done() -> dict[str, Any] | None:
                s = run_cli(env, *url, "status", job_id, "--app", APP)
                assert s.returncode == 0, describe(s)
                out: dict[str, Any] = json.loads(s.stdout)
                return out if out["state"] == "done" else None

            assert wait_for(done, 20, f"job {job_id} to be done")["result"] == 5
        stats = run_cli(env, *url, "--namespace", namespace, "stats", "--json")
        assert stats.returncode == 0, describe(stats)
        assert [q["queue"] for q in json.loads(stats.stdout)["queues"]] == ["default"]
    finally:
        from conveyor.testing import delete_namespace

        delete_namespace(cleanup)
        cleanup.close()
