"""Run the AI pipeline end to end: uvicorn serving the API, one worker process per stage
queue, and a client doing what the browser page does, over real HTTP.

1. POST six documents: each answers 202 with its id at once (no model ran yet).
2. Read the first document's summary over SSE, token by token, as it is written. After three
   tokens, SIGKILL the summarize worker (mid-run, nothing acknowledged) and start another:
   the new worker takes the job over when its lease runs out and writes the summary again
   from its first token; the stream says ``restart`` and goes on to the end.
3. Poll each document's status until done: every one went through the four stages, with
   the summary and the embedding the stand-in models give, although a stage worker died.

Run it:  python -m examples.ai_pipeline
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import httpx

from conveyor.testing import delete_namespace

from . import harness
from .samples import DOCUMENTS, expected
from .tasks import NAMESPACE, STAGES, app

KILL_AFTER_TOKENS = 3


def main() -> int:
    print(f"namespace {NAMESPACE}")
    env = {**os.environ, "EXAMPLE_NAMESPACE": NAMESPACE}
    port = harness.free_port()
    procs: dict[str, Any] = {"server": harness.server(port, env)}
    ok = False
    try:
        for stage in STAGES:  # one process per stage queue: each can be scaled on its own
            procs[stage] = harness.worker([stage], env, concurrency=16 if stage == "embed" else 4)
        base = f"http://127.0.0.1:{port}"
        harness.wait_until_serving(base + "/", procs["server"])
        print(f"serving on {base} (uvicorn {harness.API}), a worker per stage: {STAGES}")
        with httpx.Client(base_url=base, timeout=30.0) as client:
            ok = run(client, procs, env)
    finally:
        for process in procs.values():
            harness.stop(process)
        delete_namespace(app)
        app.close()
    print(
        "every document went through 4 stage queues; summary streamed over SSE; "
        "the killed stage lost nothing"
        if ok
        else "UNEXPECTED OUTCOME"
    )
    return 0 if ok else 1


def run(client: httpx.Client, procs: dict[str, Any], env: dict[str, str]) -> bool:
    posted = []
    for text in DOCUMENTS:
        started = time.monotonic()
        response = client.post("/documents", json={"text": text})
        took = time.monotonic() - started
        posted.append(response.json())
        print(f"POST /documents -> {response.status_code} {posted[-1]['job_id']} in {took:.3f}s")
        if response.status_code != 202:
            return False
    first = posted[0]
    print(f"steps of the first: {first['steps']}")

    tokens: list[str] = []
    restarts, killed = 0, False
    end: dict[str, Any] = {}
    with client.stream("GET", first["events"]) as stream:
        for event, data, _ in harness.sse_messages(stream.iter_lines()):
            if event == "chunk":
                tokens.append(json.loads(data))
                print(f"  token: {tokens[-1]}")
                if len(tokens) == KILL_AFTER_TOKENS and not killed:
                    harness.kill(procs["summarize"])
                    killed = True
                    print("  SIGKILL the summarize worker mid-run; starting another")
                    procs["summarize"] = harness.worker(["summarize"], env, concurrency=4)
            elif event == "restart":
                restarts += 1
                print(f"  restart: {json.loads(data)} (the new worker writes it again)")
                tokens = []
            elif event == "end":
                end = json.loads(data)
                break
    print(f"SSE end {end}: {' '.join(tokens)}")
    ok = end.get("state") == "done" and restarts >= 1
    ok &= tokens == expected(DOCUMENTS[0])[0]

    for document, doc in zip(DOCUMENTS, posted, strict=True):
        status = poll(client, doc["status"])
        want_tokens, want_vector = expected(document)
        print(f"GET {doc['status']} -> {status['state']}: {status.get('summary', '')[:48]}...")
        ok &= status["state"] == "done"
        ok &= status.get("summary") == " ".join(want_tokens)
        ok &= status.get("embedding") == want_vector
    return ok


def poll(client: httpx.Client, path: str, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status: dict[str, Any] = client.get(path).json()
        if status["state"] in ("done", "dead", "cancelled", "expired"):
            return status
        if time.monotonic() > deadline:
            return status
        time.sleep(0.1)


if __name__ == "__main__":
    sys.exit(main())
