"""An HTTP API that queues inference requests: answer at once with a job id, poll for status.

Covers the streams document's "API endpoints that queue AI inference requests" and its
upload handler that adds a task and returns `{"job_id": ..., "status": "queued"}`. The API
process never runs the model; a worker process does. Standard library only (http.server),
so it runs without a web framework; in FastAPI or another async framework, call
`await run_inference.enqueue_async(...)` and `await app.job(id).info_async()` instead.

    POST /api/analyze {"prompt": ..., "model": ..., "priority": ...} -> 202 {"job_id", "status"}
    GET  /api/jobs/<job id>                                          -> 200 {"state", "result"}

Run it:  python examples/api_endpoint.py   (starts a worker process, serves on a free port,
calls the API with urllib, stops everything)
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from conveyor import ConfigurationError, Conveyor, JobState
from conveyor.testing import delete_namespace

NAMESPACE = os.environ.get("EXAMPLE_NAMESPACE") or f"example-api-{secrets.token_hex(3)}"
app = Conveyor(namespace=NAMESPACE, default_queue="inference")


@app.task(timeout=60, retries=2)
async def run_inference(prompt: str, model: str, user_id: str) -> dict[str, Any]:
    await asyncio.sleep(0.3)  # the model call
    return {"model": model, "summary": prompt[:24] + "...", "tokens": len(prompt.split())}


class Api(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        if self.path != "/api/analyze":
            return self.reply(404, {"error": "not found"})
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        task = run_inference.using(priority=body.get("priority", "normal"))
        job = task.enqueue(body["prompt"], body.get("model", "small"), body.get("user", "anon"))
        self.reply(202, {"job_id": job.id, "status": "queued"})

    def do_GET(self) -> None:
        if not self.path.startswith("/api/jobs/"):
            return self.reply(404, {"error": "not found"})
        try:
            info = app.job(self.path.removeprefix("/api/jobs/")).info()
        except ConfigurationError as exc:
            return self.reply(400, {"error": str(exc)})
        out: dict[str, Any] = {"job_id": info.id, "state": info.state.value}
        if info.record and info.state is JobState.DONE:
            out["result"] = info.record.result
        elif info.record and info.record.error:
            out["error"] = info.record.error
        self.reply(404 if info.state is JobState.UNKNOWN else 200, out)

    def reply(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep the example's output readable


def call(method: str, url: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def main() -> int:
    print(f"namespace {NAMESPACE}")
    server = ThreadingHTTPServer(("127.0.0.1", 0), Api)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    # The model runs in a worker process, not in the API: `conveyor worker <cmd>`.
    cmd = ["worker", "examples.api_endpoint:app", "--concurrency", "8"]
    worker = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "--log-level", "WARNING", *cmd],
        cwd=Path(__file__).resolve().parent.parent,  # where `examples.` imports from
        env={**os.environ, "EXAMPLE_NAMESPACE": NAMESPACE},  # the worker uses our namespace
    )
    try:
        request = {"prompt": "Summarize this document about Redis Streams", "model": "gpt-x"}
        started = time.monotonic()
        status, body = call("POST", f"{base}/api/analyze", {**request, "priority": "high"})
        took = time.monotonic() - started
        print(f"POST /api/analyze {json.dumps(request)}\n  -> {status} {body} in {took:.3f}s")
        ok = status == 202 and body["status"] == "queued"
        job_url = f"{base}/api/jobs/{body['job_id']}"
        deadline = time.monotonic() + 30
        while True:
            status, state = call("GET", job_url)
            print(f"GET /api/jobs/{body['job_id']}\n  -> {status} {state}")
            if state["state"] in ("done", "dead") or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        ok &= state["state"] == "done" and state["result"]["model"] == "gpt-x"
        status, missing = call("GET", f"{base}/api/jobs/inference:n:1-0")
        print(f"GET /api/jobs/inference:n:1-0\n  -> {status} {missing}")
        ok &= status == 404
    finally:
        server.shutdown()
        worker.terminate()  # SIGTERM: the worker finishes its running jobs, then exits
        worker.wait(30)
        delete_namespace(app)
    print("queued over HTTP, answered at once, result served" if ok else "UNEXPECTED OUTCOME")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
