"""A multi-stage document pipeline: extract -> analyze -> summarize -> embed.

Covers the streams document's "multi-step AI processing pipelines": one queue (stream) per
stage, each document a chain whose stages hand over to each other when one finishes (the
ack and the next stage's enqueue in one step, not the stage enqueuing the next from its body,
which a crash between the two would duplicate or lose). A stage that fails is retried on its
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
from conveyor.workflows import Chain

NAMESPACE = os.environ.get("EXAMPLE_NAMESPACE") or f"example-pipeline-{secrets.token_hex(3)}"
STAGES = ("extract", "analyze", "summarize", "embed")
app = Conveyor(namespace=NAMESPACE)
runs: Counter[tuple[str, str]] = Counter()


@app.task(queue="extract")
async def extract(doc: str) -> dict[str, Any]:
    runs["extract", doc] += 1
    return {"doc": doc, "text": f"text of {doc}. " * 30}


@app.task(queue="analyze")
def analyze(page: dict[str, Any]) -> dict[str, Any]:  # sync: runs in the worker's thread pool
    doc, text = page["doc"], page["text"]
    runs["analyze", doc] += 1
    entities = sorted({w.strip(".") for w in text.split() if w.startswith("doc")})
    return {"doc": doc, "words": len(text.split()), "entities": entities}


@app.task(queue="summarize", retries=3, backoff=Backoff(base=0.1, cap=1.0))
async def summarize(analysis: dict[str, Any]) -> dict[str, Any]:
    doc = analysis["doc"]
    runs["summarize", doc] += 1
    if doc == "doc-2" and runs["summarize", doc] == 1:
        raise TimeoutError("summarizer model timed out")  # transient: retried alone
    entities = ", ".join(analysis["entities"])
    return {"doc": doc, "summary": f"{doc}: {analysis['words']} words about {entities}"}


@app.task(queue="embed")
async def embed(summarized: dict[str, Any]) -> dict[str, Any]:
    doc, summary = summarized["doc"], summarized["summary"]
    runs["embed", doc] += 1
    vector = [round(b / 255, 3) for b in hashlib.sha256(summary.encode()).digest()[:4]]
    return {"doc": doc, "summary": summary, "vector": vector}


def pipeline(doc: str) -> Chain:
    """One document's stages: each stage's result is the next one's argument, and each
    stage's ack adds the next stage (forwarded first, de-duplicated, across queues), so a
    worker that dies between finishing a stage and handing it on neither loses nor repeats
    the next stage."""
    return extract.s(doc) | analyze.s() | summarize.s() | embed.s()


def _doc_of(args: list[Any]) -> str:
    first = args[0]  # extract gets the name; later stages get the stage before's result
    return first if isinstance(first, str) else str(first.get("doc"))


def show_history(doc: str) -> None:
    """What ran for one document, read back from the history the ready streams keep."""
    print(f"processing history of {doc}, read back from the streams:")
    for stage in STAGES:
        for entry in history.recent(app, stage, limit=20):
            if _doc_of(json.loads(entry.fields["args"])) == doc:
                print(f"  {entry.job_id:<48} attempt {entry.attempt}  {entry.info.state.value}")


async def main() -> int:
    print(f"namespace {NAMESPACE}")
    docs = [f"doc-{i}" for i in range(1, 6)]
    ok = True
    try:
        # One worker for every stage; it reads all the queues the app's tasks use.
        async with worker_task(app, WorkerSettings(concurrency=8)):
            handles = [await pipeline(d).enqueue_async() for d in docs]
            print(f"uploaded {len(docs)} documents; the upload handler returned at once")
            for doc, handle in zip(docs, handles, strict=True):
                result = await handle.result_async(timeout=20)
                stages = len(handle.jobs)
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
