"""A multi-stage document pipeline: extract -> analyze -> summarize -> embed.

Covers the streams document's "multi-step AI processing pipelines": one queue (stream) per
stage, each stage enqueuing the next when it finishes. A stage that fails is retried on its
own; the stages before it are not run again, so no progress is lost. The ready streams keep
their finished entries as history (trimmed by Retention): `conveyor history -q summarize`
(or `conveyor.history.recent`) shows what ran, with which arguments, and how it ended.

Run it:  python examples/pipeline.py
Deployed, each stage can have its own worker pool:
    conveyor worker examples.pipeline:app -q extract,analyze -c 20
    conveyor worker examples.pipeline:app -q summarize,embed -c 4 -p 2
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import secrets
import sys
from collections import Counter
from typing import Any

from conveyor import Backoff, Conveyor, WorkerSettings, history
from conveyor.testing import delete_namespace, worker_task

NAMESPACE = os.environ.get("EXAMPLE_NAMESPACE") or f"example-pipeline-{secrets.token_hex(3)}"
STAGES = ("extract", "analyze", "summarize", "embed")
app = Conveyor(namespace=NAMESPACE)
runs: Counter[tuple[str, str]] = Counter()


@app.task(queue="extract")
async def extract(doc: str) -> dict[str, Any]:
    runs["extract", doc] += 1
    text = f"text of {doc}. " * 30
    return {"next": (await analyze.enqueue_async(doc, text)).id}


@app.task(queue="analyze")
def analyze(doc: str, text: str) -> dict[str, Any]:  # sync: runs in the worker's thread pool
    runs["analyze", doc] += 1
    entities = sorted({w.strip(".") for w in text.split() if w.startswith("doc")})
    return {"next": summarize.enqueue(doc, len(text.split()), entities).id}


@app.task(queue="summarize", retries=3, backoff=Backoff(base=0.1, cap=1.0))
async def summarize(doc: str, words: int, entities: list[str]) -> dict[str, Any]:
    runs["summarize", doc] += 1
    if doc == "doc-2" and runs["summarize", doc] == 1:
        raise TimeoutError("summarizer model timed out")  # transient: retried alone
    summary = f"{doc}: {words} words about {', '.join(entities)}"
    return {"next": (await embed.enqueue_async(doc, summary)).id}


@app.task(queue="embed")
async def embed(doc: str, summary: str) -> dict[str, Any]:
    runs["embed", doc] += 1
    vector = [round(b / 255, 3) for b in hashlib.sha256(summary.encode()).digest()[:4]]
    return {"doc": doc, "summary": summary, "vector": vector}


async def follow(job_id: str) -> tuple[int, dict[str, Any]]:
    """Walk one document from stage to stage; returns the number of jobs and the last result."""
    stages = 0
    while True:
        result = await app.job(job_id).result_async(timeout=20)
        stages += 1
        if "next" not in result:
            return stages, result
        job_id = result["next"]


def show_history(doc: str) -> None:
    """What ran for one document, read back from the history the ready streams keep."""
    print(f"processing history of {doc}, read back from the streams:")
    for stage in STAGES:
        for entry in history.recent(app, stage, limit=20):
            if json.loads(entry.fields["args"])[0] == doc:
                attempt = entry.fields["attempt"]
                print(f"  {entry.job_id:<32} attempt {attempt}  {entry.info.state.value}")


async def main() -> int:
    print(f"namespace {NAMESPACE}")
    docs = [f"doc-{i}" for i in range(1, 6)]
    ok = True
    try:
        # One worker for every stage; it reads all the queues the app's tasks use.
        async with worker_task(app, WorkerSettings(concurrency=8)):
            firsts = await extract.enqueue_many_async([(d,) for d in docs])
            print(f"uploaded {len(docs)} documents; the upload handler returned at once")
            for doc, job in zip(docs, firsts, strict=True):
                stages, result = await follow(job.id)
                vector, summary = result["vector"], result["summary"][:40]
                print(f"{doc}: {stages} stages -> {vector}  ({summary}...)")
                ok &= stages == 4
        per_stage = [runs[s, "doc-2"] for s in STAGES]
        print(f"doc-2 ran: {per_stage} times per stage (summarize retried)")
        ok &= per_stage == [1, 1, 2, 1]
        show_history("doc-2")
    finally:
        delete_namespace(app)
    print("every document went through 4 stages" if ok else "UNEXPECTED OUTCOME")
    return 0 if ok else 1


if __name__ == "__main__":
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    sys.exit(asyncio.run(main()))
