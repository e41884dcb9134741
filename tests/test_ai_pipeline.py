"""examples/ai_pipeline over real HTTP: uvicorn serving the API and a `conveyor worker`
process serving the four stage queues, both real processes on the test's Redis, called with
httpx as a browser would (its SSE read as a stream, line by line)."""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from examples.ai_pipeline import harness
from examples.ai_pipeline.samples import DOCUMENTS, expected
from examples.ai_pipeline.tasks import STAGES

from conveyor import Conveyor
from conveyor.testing import delete_namespace


@pytest.fixture(scope="module")
def served(redis_url: str) -> Iterator[tuple[httpx.Client, dict[str, str]]]:
    """The API on a free loopback port, in a namespace of this module; no worker yet."""
    namespace = f"test-aipipe-{secrets.token_hex(4)}"
    env = {
        **os.environ,
        "CONVEYOR_REDIS_URL": redis_url,
        "EXAMPLE_NAMESPACE": namespace,
        "AI_PIPELINE_TOKEN_DELAY": "0.1",  # 17 tokens: the first arrives 1.6 s before the end
    }
    port = harness.free_port()
    server = harness.server(port, env)
    try:
        harness.wait_until_serving(f"http://127.0.0.1:{port}/", server)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=20.0) as client:
            yield client, env
    finally:
        harness.stop(server)
        cleaner = Conveyor(redis_url, namespace=namespace)
        delete_namespace(cleaner)
        cleaner.close()


def poll(client: httpx.Client, path: str, timeout: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status: dict[str, Any] = client.get(path).json()
        if status["state"] in ("done", "dead") or time.monotonic() > deadline:
            return status
        time.sleep(0.05)


def test_post_answers_at_once_sse_streams_the_summary_live_and_get_reports_the_result(
    served: tuple[httpx.Client, dict[str, str]],
) -> None:
    client, env = served
    document = DOCUMENTS[0]
    want_tokens, want_vector = expected(document)

    # No worker runs yet: the POST answers with the chain's id and every step's id.
    posted = client.post("/documents", json={"text": document})
    assert posted.status_code == 202
    body = posted.json()
    doc_id = body["job_id"]
    assert re.fullmatch(r"[0-9a-f]{32}", doc_id)
    assert list(body["steps"]) == list(STAGES)
    assert [i.split(":")[0] for i in body["steps"].values()] == list(STAGES)  # 4 stage queues
    status = client.get(body["status"]).json()
    assert status == {
        "job_id": doc_id,
        "state": "queued",
        "stage": "extract",
        "steps": {"extract": "queued", "analyze": "unknown", "summarize": "unknown",
                  "embed": "unknown"},
    }  # fmt: skip

    # The summary's stream opens before its step exists; then a worker process starts.
    tokens: list[str] = []
    ids: list[str] = []
    states_at_first_token: list[str] = []
    worker = None
    try:
        with client.stream("GET", body["events"]) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            worker = harness.worker(STAGES, env, concurrency=20)
            messages = harness.sse_messages(stream.iter_lines())
            for event, data, event_id in messages:
                if event == "end":
                    end = json.loads(data)
                    break
                assert event == "chunk", (event, data)
                if not tokens:  # live: the summarize job still runs while its tokens arrive
                    summarize_id = body["steps"]["summarize"]
                    states_at_first_token.append(
                        client.get(f"/jobs/{summarize_id}").json()["state"]
                    )
                tokens.append(json.loads(data))
                assert event_id is not None
                ids.append(event_id)
        assert end == {"state": "done"}
        assert tokens == want_tokens
        assert states_at_first_token == ["running"]

        # GET reports the final result: the summary and the embedding of the batched step.
        final = poll(client, body["status"])
        assert final["state"] == "done" and final["stage"] == "embed"
        assert final["steps"] == {stage: "done" for stage in STAGES}
        assert final["summary"] == " ".join(want_tokens)
        assert final["embedding"] == want_vector

        # A browser that reconnects sends Last-Event-ID and gets the rest, then the end.
        resumed = client.get(body["events"], headers={"Last-Event-ID": ids[4]})
        rest = list(harness.sse_messages(resumed.text.splitlines()))
        assert [json.loads(data) for _, data, _ in rest] == [*want_tokens[5:], {"state": "done"}]
    finally:
        if worker is not None:
            harness.stop(worker)


def test_bad_input_gets_clear_errors_and_enqueues_nothing(
    served: tuple[httpx.Client, dict[str, str]],
) -> None:
    client, _ = served
    empty = client.post("/documents", json={"text": ""})
    assert empty.status_code == 422 and "at least 1 character" in empty.text
    assert client.post("/documents", content=b"not json").status_code == 422
    assert client.get("/documents/not-an-id").status_code == 404
    assert client.get("/documents/not-an-id/summary").status_code == 404
    unknown = "0" * 32
    assert client.get(f"/documents/{unknown}").status_code == 404
    assert client.get(f"/documents/{unknown}/summary").status_code == 404
    markup = client.post("/documents", json={"text": "<p> </p>"})
    assert markup.status_code == 422 and "no text once its markup is removed" in markup.text
    assert client.delete(f"/documents/{unknown}").status_code == 404
    doc_id = client.post("/documents", json={"text": "One sentence."}).json()["job_id"]
    bad_resume = client.get(f"/documents/{doc_id}/summary", headers={"Last-Event-ID": "<x>"})
    assert bad_resume.status_code == 400 and "Last-Event-ID" in bad_resume.json()["detail"]


def test_a_chain_cancelled_before_summarize_ends_the_summary_stream_saying_so(
    served: tuple[httpx.Client, dict[str, str]],
) -> None:
    client, _ = served  # no worker: the chain waits at its first step, queued (will_skip)
    posted = client.post("/documents", json={"text": DOCUMENTS[2]}).json()
    with client.stream("GET", posted["events"]) as stream:
        cancelled = client.delete(posted["status"]).json()
        assert cancelled == {"job_id": posted["job_id"], "stage": "extract", "outcome": "will_skip"}
        got = list(harness.sse_messages(stream.iter_lines()))
    assert got == [("end", '{"state":"cancelled","stage":"extract"}', None)]
    status = client.get(posted["status"]).json()
    assert status["state"] == "cancelled" and status["stage"] == "extract"
    assert "summary" not in status
