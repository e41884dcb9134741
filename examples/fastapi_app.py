"""A FastAPI service that queues inference requests: POST answers at once with a job id, GET
reports the job's state and result. The API never runs the model; a worker process does.

The streams document's "API endpoint that enqueues and returns a job id", with
`conveyor.fastapi`: the lifespan opens and closes the app's Redis connections, endpoints
receive the app through `Depends` (`ConveyorApp`), and `jobs_router()` serves job status.

    POST   /analyze {"prompt": ..., "model": ...}  -> 202 {"job_id": ..., "status": "queued"}
    GET    /jobs/<job id>                          -> 200 {"state": ..., "result": ...} | 404
    DELETE /analyze/<job id>                       -> 200 {"outcome": "cancelled" | ...}

Serve it:  uvicorn examples.fastapi_app:api     (needs `pip install conveyor-queue[fastapi]`)
Work it:   conveyor worker examples.fastapi_app:app
Run it:    python examples/fastapi_app.py   (starts a worker process, calls the API in-process
           with httpx, the lifespan run by asgi-lifespan, stops everything)
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from conveyor import Conveyor
from conveyor.fastapi import ConveyorApp, jobs_router, lifespan
from conveyor.testing import delete_namespace

NAMESPACE = os.environ.get("EXAMPLE_NAMESPACE") or f"example-fastapi-{secrets.token_hex(3)}"
app = Conveyor(namespace=NAMESPACE, default_queue="inference")


@app.task(timeout=60, retries=2)
async def run_inference(prompt: str, model: str) -> dict[str, Any]:
    await asyncio.sleep(0.2)  # the model call
    return {"model": model, "summary": prompt[:24] + "...", "tokens": len(prompt.split())}


class AnalyzeRequest(BaseModel):
    prompt: str
    model: str = "small"
    priority: str = "normal"


api = FastAPI(lifespan=lifespan(app))
api.include_router(jobs_router(), prefix="/jobs")
# It also serves /jobs/{job_id}/events: a job's streamed chunks as Server-Sent Events.


@api.post("/analyze", status_code=202)
async def analyze(request: AnalyzeRequest) -> dict[str, str]:
    task = run_inference.using(priority=request.priority)
    job = await task.enqueue_async(request.prompt, request.model)  # one XADD, then answer
    return {"job_id": job.id, "status": "queued"}


@api.delete("/analyze/{job_id}")
async def cancel(job_id: str, conveyor: ConveyorApp) -> dict[str, str]:
    """An endpoint that needs the app itself gets it through Depends (ConveyorApp)."""
    outcome = await conveyor.job(job_id).cancel_async()
    return {"job_id": job_id, "outcome": outcome.outcome.value}


async def call_api() -> bool:
    """What a client does: POST, then poll the status endpoint until the job ends."""
    import httpx  # the ASGI transport calls the app in-process; over the network it is
    from asgi_lifespan import LifespanManager  # the same requests against uvicorn

    async with LifespanManager(api) as running:
        transport = httpx.ASGITransport(app=running.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            request = {"prompt": "Summarize this document about Redis Streams", "model": "gpt-x"}
            started = time.monotonic()
            posted = await client.post("/analyze", json=request)
            took = time.monotonic() - started
            print(f"POST /analyze -> {posted.status_code} {posted.json()} in {took:.3f}s")
            job_id = posted.json()["job_id"]
            deadline = time.monotonic() + 30
            while True:
                got = await client.get(f"/jobs/{job_id}")
                print(f"GET /jobs/{job_id} -> {got.status_code} {got.json()}")
                if got.json()["state"] in ("done", "dead") or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.3)
            missing = await client.get("/jobs/inference:n:1-0")
            print(f"GET /jobs/inference:n:1-0 -> {missing.status_code}")
            late = await client.delete(f"/analyze/{job_id}")
            print(f"DELETE /analyze/{job_id} -> {late.status_code} {late.json()}")
    return (
        late.json()["outcome"] == "already_ended"
        and posted.status_code == 202
        and got.json()["state"] == "done"
        and got.json()["result"]["model"] == "gpt-x"
        and missing.status_code == 404
    )


def main() -> int:
    print(f"namespace {NAMESPACE}")
    cmd = ["worker", "examples.fastapi_app:app", "--concurrency", "8"]
    worker = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "--log-level", "WARNING", *cmd],
        cwd=Path(__file__).resolve().parent.parent,  # where `examples.` imports from
        env={**os.environ, "EXAMPLE_NAMESPACE": NAMESPACE},
    )
    ok = False
    try:
        ok = asyncio.run(call_api())
    finally:
        worker.terminate()  # SIGTERM: the worker finishes its running jobs, then exits
        worker.wait(30)
        delete_namespace(app)
        app.close()
    print("FastAPI queued at once, worker ran it, status served" if ok else "UNEXPECTED OUTCOME")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
