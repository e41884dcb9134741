"""A Flask app that renders reports in the background: POST queues a report and answers with
its job id, GET serves its state. Tasks run inside the Flask app's application context, so
`current_app`, `g` and app-bound extensions work in them as in a request.

    POST /reports {"account": ...}  -> 202 {"job_id": ...}
    GET  /reports/<job id>          -> 200 {"state": ..., "result": ...} | 404

Serve it:  flask --app examples.flask_app:create_app run
Work it:   flask --app examples.flask_app:create_app conveyor worker -c 4
Run it:    python examples/flask_app.py   (starts `flask conveyor worker` as a process, calls
           the app with Flask's test client, stops everything)
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from flask import Flask, current_app, g, jsonify, request

from conveyor import ConfigurationError, Conveyor, JobState
from conveyor.flask import FlaskConveyor
from conveyor.testing import delete_namespace

NAMESPACE = os.environ.get("EXAMPLE_NAMESPACE") or f"example-flask-{secrets.token_hex(3)}"
app = Conveyor(namespace=NAMESPACE, default_queue="reports")
conveyor_ext = FlaskConveyor(app)


def database() -> dict[str, Any]:
    """Stands in for a connection an app opens once per context (g) and closes at teardown."""
    if "db" not in g:
        g.db = {"opened_for": current_app.name}
    return g.db  # type: ignore[no-any-return]


@app.task(retries=2)
def render_report(account: str) -> dict[str, str]:
    title = current_app.config["REPORT_TITLE"]  # the Flask app's config, in a worker
    return {"account": account, "title": title, "db": database()["opened_for"]}


def create_app() -> Flask:
    flask_app = Flask("reports")
    flask_app.config["REPORT_TITLE"] = "Monthly usage"
    conveyor_ext.init_app(flask_app)

    @flask_app.teardown_appcontext
    def close_db(exc: BaseException | None) -> None:
        g.pop("db", None)  # runs after each task too

    @flask_app.post("/reports")
    def queue_report() -> Any:
        job = render_report.enqueue(request.get_json()["account"])
        return jsonify(job_id=job.id), 202

    @flask_app.get("/reports/<job_id>")
    def report_status(job_id: str) -> Any:
        try:
            info = app.job(job_id).info()
        except ConfigurationError as exc:
            return jsonify(error=str(exc)), 400
        if info.state is JobState.UNKNOWN:
            return jsonify(error="no such job"), 404
        body: dict[str, Any] = {"job_id": job_id, "state": info.state.value}
        if info.state is JobState.DONE and info.record is not None:
            body["result"] = info.record.result
        return jsonify(body)

    return flask_app


def main() -> int:
    print(f"namespace {NAMESPACE}")
    cmd = ["--app", "examples.flask_app:create_app", "conveyor", "worker", "-c", "4"]
    worker = subprocess.Popen(
        [sys.executable, "-m", "flask", *cmd],
        cwd=Path(__file__).resolve().parent.parent,  # where `examples.` imports from
        env={**os.environ, "EXAMPLE_NAMESPACE": NAMESPACE},
    )
    ok = False
    try:
        client = create_app().test_client()
        posted = client.post("/reports", json={"account": "acme"})
        print(f"POST /reports -> {posted.status_code} {posted.get_json()}")
        job_id = posted.get_json()["job_id"]
        deadline = time.monotonic() + 30
        while True:
            got = client.get(f"/reports/{job_id}")
            print(f"GET /reports/{job_id} -> {got.status_code} {got.get_json()}")
            if got.get_json()["state"] in ("done", "dead") or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        ok = posted.status_code == 202 and got.get_json().get("result") == {
            "account": "acme",
            "title": "Monthly usage",
            "db": "reports",
        }
    finally:
        worker.terminate()  # SIGTERM: the worker finishes its running jobs, then exits
        worker.wait(30)
        delete_namespace(app)
        app.close()
    print("Flask task ran in its app context, result served" if ok else "UNEXPECTED OUTCOME")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
