"""Workflows: a chain over stage queues, a chord that fans out and in, a failed step resumed.

The seed's pipeline (extract -> analyze -> summarize -> embed) as one chain: each stage's
result is the next stage's first argument, the handle is returned before any stage ran, and
each handoff is exactly once (in the ack where two stages share a queue, forward-then-ack
with a deterministic id where they do not). Then a chord embeds a document's chunks in
parallel and merges them once, in order. Then a stage fails for good: its dead letter names
the chain and the step, and replaying it resumes the chain from there.

Run it:  python examples/workflows.py
Deployed, each stage queue can have its own worker pool:
    conveyor worker examples.workflows:app -q extract,analyze -c 20
    conveyor worker examples.workflows:app -q summarize,embed -c 4 -p 2
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import secrets
import sys

from conveyor import Conveyor, JobFailed, WorkerSettings, chain, chord, dead_letters
from conveyor.testing import delete_namespace, worker_task

NAMESPACE = os.environ.get("EXAMPLE_NAMESPACE") or f"example-workflows-{secrets.token_hex(3)}"
app = Conveyor(namespace=NAMESPACE)
broken = {"summarize": True}


@app.task(queue="extract")
async def extract(doc: str) -> str:
    return f"text of {doc}. " * 3


@app.task(queue="analyze")
def analyze(text: str) -> dict[str, int]:  # sync: runs in the worker's thread pool
    return {"words": len(text.split()), "chars": len(text)}


@app.task(queue="summarize", retries=0)
async def summarize(stats: dict[str, int], doc: str) -> str:
    if doc == "doc-3" and broken["summarize"]:
        raise RuntimeError("summarizer model is down")
    return f"{doc}: {stats['words']} words"


@app.task(queue="embed")
async def embed(text: str) -> list[float]:
    return [round(b / 255, 3) for b in hashlib.sha256(text.encode()).digest()[:3]]


@app.task(queue="embed")
async def merge(vectors: list[list[float]], doc: str) -> dict[str, object]:
    return {"doc": doc, "chunks": len(vectors), "first": vectors[0]}


async def main() -> int:
    print(f"namespace {NAMESPACE}")
    ok = True
    try:
        async with worker_task(app, WorkerSettings(concurrency=8)):
            # 1. A chain per document, written with | (or chain(...)).
            handles = [
                await (extract.s(d) | analyze.s() | summarize.s(d) | embed.s()).enqueue_async()
                for d in ("doc-1", "doc-2")
            ]
            print("2 chains enqueued; first step state:", (await handles[0].status_async()).value)
            for h in handles:
                vector = await h.result_async(timeout=20)
                print(f"chain {h.id[:8]}: 4 steps -> {vector}")
                ok &= len(vector) == 3

            # 2. A chord: embed every chunk in parallel, merge once with all vectors in order.
            chunks = [f"chunk {i} of doc-1" for i in range(8)]
            fan = chord([embed.s(c) for c in chunks], merge.s("doc-1"))
            merged = await (await fan.enqueue_async()).result_async(timeout=20)
            print(f"chord: merged {merged['chunks']} chunk vectors in order")
            ok &= merged["chunks"] == 8 and merged["first"] == await embed.fn(chunks[0])

            # 3. A step that fails for good stops its chain; replaying it resumes the chain.
            steps = chain(extract.s("doc-3"), analyze.s(), summarize.s("doc-3"))
            failing = await steps.enqueue_async()
            try:
                await failing.result_async(timeout=20)
                ok = False
            except JobFailed as exc:
                print(f"chain stopped at {exc.job_id}: {exc.error}")
            (dead,) = dead_letters.list_dead(app, "summarize")
            print(f"dead letter: {dead.fields['dead_workflow']}")
            broken["summarize"] = False  # the model is back
            dead_letters.replay(app, "summarize", dead.entry_id)
            resumed = await failing.result_async(timeout=20)
            print(f"replayed: the chain resumed and ended with {resumed!r}")
            ok &= resumed == "doc-3: 9 words"
    finally:
        delete_namespace(app)
    print("chains, a chord and a resumed chain ran as expected" if ok else "UNEXPECTED OUTCOME")
    return 0 if ok else 1


if __name__ == "__main__":
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    sys.exit(asyncio.run(main()))
