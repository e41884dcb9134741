"""`conveyor events`: the latest events, and --follow printing new ones as workers run jobs."""

from __future__ import annotations

import contextlib
import json
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from conveyor import Conveyor
from conveyor.events import latest
from tests.conftest import fast, wait_until, worker_thread
from tests.telemetryapp import register_tasks
from tests.test_cli import ROOT, cli_env, run_cli

APP = "tests.telemetryapp:app"


def test_events_follow_prints_events_as_jobs_run(redis_url: str, namespace: str) -> None:
    app = Conveyor(redis_url, namespace=namespace, events=True)
    register_tasks(app)
    proc = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "events", "--app", APP, "--follow", "-n", "100"],
        cwd=ROOT,
        env=cli_env(redis_url, namespace),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout or []], daemon=True).start()
    seen: list[str] = []

    def read_until(job_id: str) -> None:
        deadline = time.monotonic() + 15
        while not any("succeeded" in x and job_id in x for x in seen):
            assert time.monotonic() < deadline, (seen, proc.poll())
            with contextlib.suppress(queue.Empty):
                seen.append(lines.get(timeout=0.2))

    try:
        with worker_thread(app, fast()):
            first = app.tasks["ok"].enqueue(1)
            assert first.result(10) == 1
            read_until(first.id)  # shown: the command now follows from its last event
            job = app.tasks["flaky"].enqueue(4)
            assert job.result(10) == 4
            read_until(job.id)
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
    followed = [x for x in seen if job.id in x]
    kinds = [x.split()[1] for x in followed]
    assert kinds == ["started", "failed", "retried", "started", "succeeded"], (seen, err)
    assert all("flaky" in x for x in followed)
    assert "error=RuntimeError: flaky 4 failed once" in followed[1]
    assert "attempt=2" in followed[3]
    assert proc.returncode == 0, err
    assert "Traceback" not in err


def test_events_prints_the_latest_as_json(redis_url: str, namespace: str, tmp_path: Path) -> None:
    app = Conveyor(redis_url, namespace=namespace, events=True)
    register_tasks(app)
    with worker_thread(app, fast()):
        jobs = [app.tasks["ok"].enqueue(i) for i in range(3)]
        for j in jobs:
            j.result(10)
        wait_until(
            lambda: app.broker.client.xlen(f"{namespace}:{{~events}}:stream") == 6, 5, "6 events"
        )
    p = run_cli(cli_env(redis_url, namespace), "events", "--app", APP, "-n", "2", "--json")
    assert p.returncode == 0, p.stderr
    rows = [json.loads(line) for line in p.stdout.splitlines()]
    assert rows == [e.as_dict() for e in latest(app, 2)]
    assert {r["job_id"] for r in rows} <= {j.id for j in jobs}
    assert all(r["queue"] == "default" and r["task"] == "ok" for r in rows)
