"""conveyor.flask: tasks run inside the Flask app's application context, on a real worker
and Redis; `flask conveyor worker` runs as a user starts it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, current_app, g

from conveyor import Conveyor, JobFailed
from conveyor.flask import FlaskConveyor, extension
from tests.conftest import fast, worker_thread


def test_each_task_runs_in_an_app_context_of_its_own_with_teardown(app: Conveyor) -> None:
    torn_down: list[str] = []
    flask_app = Flask("shop")
    flask_app.config["CURRENCY"] = "EUR"
    ext = FlaskConveyor(app, flask_app)
    assert extension(flask_app) is ext

    @flask_app.teardown_appcontext
    def teardown(exc: BaseException | None) -> None:
        torn_down.append(g.get("order", "-"))

    @app.task
    def price(order: str) -> dict[str, Any]:
        leaked = g.get("order")  # g must not carry over from an earlier task
        g.order = order
        return {"app": current_app.name, "currency": current_app.config["CURRENCY"], "g": leaked}

    @app.task
    async def price_async(order: str) -> str:
        g.order = order
        return str(current_app.config["CURRENCY"])

    with worker_thread(app, fast(concurrency=1)):
        first = price.enqueue("o-1").result(timeout=10)
        second = price.enqueue("o-2").result(timeout=10)
        assert price_async.enqueue("o-3").result(timeout=10) == "EUR"
    assert first == {"app": "shop", "currency": "EUR", "g": None}
    assert second == {"app": "shop", "currency": "EUR", "g": None}
    assert sorted(torn_down) == ["o-1", "o-2", "o-3"]


def test_a_task_without_init_app_fails_naming_the_fix(app: Conveyor) -> None:
    FlaskConveyor(app)  # init_app never called

    @app.task(retries=0)
    def needs_app() -> str:
        return str(current_app.name)

    with worker_thread(app, fast()), pytest.raises(JobFailed, match=r"call ext\.init_app"):
        needs_app.enqueue().result(timeout=10)


def test_init_app_rebinds_to_the_namespace_in_flask_config(redis_url: str) -> None:
    app = Conveyor(redis_url, namespace="from-code")
    flask_app = Flask("cfg")
    flask_app.config["CONVEYOR_NAMESPACE"] = "from-flask-config"
    FlaskConveyor(app).init_app(flask_app)
    assert app.namespace == "from-flask-config"
    app.close()


def test_flask_conveyor_worker_command_runs_jobs_and_stops_on_sigterm(
    tmp_path: Path, redis_url: str, namespace: str
) -> None:
    (tmp_path / "shop.py").write_text(
        textwrap.dedent(
            f"""
            from flask import Flask, current_app
            from conveyor import Conveyor
            from conveyor.flask import FlaskConveyor

            app = Conveyor({redis_url!r}, namespace={namespace!r})
            ext = FlaskConveyor(app)

            @app.task
            def greet(name: str) -> str:
                return current_app.config["GREETING"] + ", " + name

            def create_app():
                flask_app = Flask("shop")
                flask_app.config["GREETING"] = "Hello"
                ext.init_app(flask_app)
                return flask_app
            """
        )
    )
    sys.path.insert(0, str(tmp_path))
    try:
        import shop  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(tmp_path))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flask",
            "--app",
            "shop:create_app",
            "conveyor",
            "worker",
            "-c",
            "2",
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert shop.greet.enqueue("Ada").result(timeout=20) == "Hello, Ada"
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        shop.app.close()
        del sys.modules["shop"]
    assert proc.returncode == 0, out


BURST_SHOP = """
from flask import Flask, current_app
from conveyor import Conveyor, WorkerSettings
from conveyor.flask import FlaskConveyor

app = Conveyor(
    {url!r}, namespace={namespace!r}, worker=WorkerSettings(concurrency=3, shutdown_grace=5.0)
)
ext = FlaskConveyor(app)

@app.task
def greet(name: str) -> str:
    return current_app.config["GREETING"] + ", " + name

def create_app():
    flask_app = Flask("burstshop")
    flask_app.config["GREETING"] = "Hi"
    ext.init_app(flask_app)
    return flask_app
"""


WORKER = ("worker", "--burst", "--block-ms", "100", "--max-jobs", "100")


def test_flask_worker_takes_flags_then_env_then_app_settings_and_bursts(
    tmp_path: Path, redis_url: str, namespace: str
) -> None:
    (tmp_path / "burstshop.py").write_text(BURST_SHOP.format(url=redis_url, namespace=namespace))
    sys.path.insert(0, str(tmp_path))
    try:
        import burstshop  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(tmp_path))
    try:
        jobs = [burstshop.greet.enqueue(name) for name in ("Ada", "Bo", "Cy")]
        env = {
            **os.environ,
            "PYTHONPATH": str(tmp_path),
            "CONVEYOR_CONCURRENCY": "7",  # beats the app's 3
            "CONVEYOR_BLOCK_MS": "500",  # loses to the flag
        }
        done = subprocess.run(
            [sys.executable, "-m", "flask", "--app", "burstshop:create_app", "conveyor", *WORKER],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        out = done.stdout + done.stderr
        # --burst: the worker ran the queue dry and exited 0 by itself.
        assert done.returncode == 0, out
        assert [job.result(timeout=1) for job in jobs] == ["Hi, Ada", "Hi, Bo", "Hi, Cy"]
        for said in (
            "concurrency=7 (CONVEYOR_CONCURRENCY)",
            "block_ms=100 (--block-ms)",
            "shutdown_grace=5.0 (app)",
            "burst=True (--burst)",
            "max_jobs=100 (--max-jobs)",
        ):
            assert said in out, out
    finally:
        burstshop.app.close()
        del sys.modules["burstshop"]


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--max-jobs", "0"], {}, "--max-jobs"),
        (["--prefetch", "some"], {}, "neither a whole number nor 'auto'"),
        ([], {"CONVEYOR_LEASE": "soon"}, "CONVEYOR_LEASE"),
    ],
)
def test_flask_worker_refuses_a_bad_setting_before_it_runs(
    app: Conveyor,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    env: dict[str, str],
    message: str,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    flask_app = Flask("bad")
    FlaskConveyor(app).init_app(flask_app)
    result = flask_app.test_cli_runner().invoke(args=["conveyor", "worker", *args])
    assert result.exit_code != 0
    assert message in result.output, result.output
