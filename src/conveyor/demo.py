"""`make demo`: a real worker process running a document pipeline on a real Redis.

extract -> analyze -> summarize -> embed, one queue per stage, each document a chain whose
stages hand over to each other exactly once (the ack and the next stage's enqueue together).
Along the way: a flaky stage that succeeds on retry, a poison document that ends in the
dead-letter stream, a delayed report job, and results read back through job handles.
The demo uses a namespace of its own and deletes its keys when it ends.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import secrets
import signal
import subprocess
import sys
import time
from typing import Any

from rich.console import Console
from rich.table import Table

from . import Backoff, ChainHandle, Conveyor, JobFailed, chain, dead_letters, stats
from .broker import configured_url
from .embedded import redis_for

NAMESPACE = os.environ.get("CONVEYOR_DEMO_NAMESPACE", "conveyor-demo")
STAGES = ("extract", "analyze", "summarize", "embed")
app = Conveyor(namespace=NAMESPACE)
console = Console()


@app.task(queue="extract")
async def extract(doc_id: str) -> dict[str, Any]:
    """Pretend OCR: async I/O-bound work."""
    await asyncio.sleep(random.uniform(0.05, 0.2))
    return {"doc": doc_id, "text": f"contents of {doc_id} " * 20}


@app.task(queue="analyze", retries=3, backoff=Backoff(base=0.3, cap=2.0))
def analyze(page: dict[str, Any]) -> dict[str, Any]:
    """A flaky model call (sync, runs in the thread pool): fails on its first try for some."""
    doc_id = page["doc"]
    marker = app.broker.client.incr(f"{NAMESPACE}:demo:tries:{doc_id}")
    if doc_id.endswith("3") and int(marker) == 1:
        raise TimeoutError("model endpoint timed out (transient)")
    if doc_id == "doc-poison":
        raise ValueError("document is corrupt: cannot be analyzed")
    time.sleep(random.uniform(0.05, 0.15))
    return {"doc": doc_id, "words": len(page["text"].split()), "attempt": int(marker)}


@app.task(queue="summarize")
async def summarize(analysis: dict[str, Any]) -> dict[str, Any]:
    await asyncio.sleep(random.uniform(0.05, 0.15))
    doc_id = analysis["doc"]
    return {"doc": doc_id, "summary": f"{doc_id}: {analysis['words']} words about things"}


@app.task(queue="embed")
def embed(summary: dict[str, Any]) -> dict[str, Any]:
    digest = hashlib.sha256(summary["summary"].encode()).digest()
    return {"doc": summary["doc"], "vector": [round(b / 255, 3) for b in digest[:4]]}


@app.task(queue="extract")
def send_report(count: int) -> str:
    return f"report sent: {count} documents processed"


def pipeline(doc_id: str) -> ChainHandle[dict[str, Any]]:
    """One document's four stages as a chain: each stage's ack adds the next stage in the
    same step (or forwards it first, de-duplicated, when the next queue is elsewhere), so a
    worker killed between the two neither loses nor repeats the next stage."""
    return chain(extract.s(doc_id), analyze.s(), summarize.s(), embed.s()).enqueue()


def _cleanup() -> None:
    client = app.broker.client
    keys = list(client.scan_iter(match=f"{NAMESPACE}:*", count=1000))
    for i in range(0, len(keys), 500):
        client.delete(*keys[i : i + 500])


def _start_worker(url: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ, CONVEYOR_REDIS_URL=url, CONVEYOR_DEMO_NAMESPACE=NAMESPACE)
    cmd = [
        sys.executable,
        "-m",
        "conveyor",
        "--log-level",
        "WARNING",
        "worker",
        "conveyor.demo:app",
        "--queues",
        ",".join(STAGES),
        "--concurrency",
        "8",
        "--processes",
        "2",
        "--grace",
        "10",
    ]
    console.print(
        f"[bold]$ conveyor worker conveyor.demo:app --queues {','.join(STAGES)} "
        "--concurrency 8 --processes 2[/bold]"
    )
    return subprocess.Popen(cmd, env=env)


def run_demo(url: str | None = None, documents: int = 12) -> int:
    global NAMESPACE
    NAMESPACE = f"conveyor-demo-{secrets.token_hex(3)}"
    with redis_for(url or configured_url()) as found:
        app.rebind(url=found, namespace=NAMESPACE)
        info = app.broker.server_info()
        console.rule("[bold]Conveyor demo")
        console.print(
            f"Redis {'.'.join(map(str, info.version))} at {found} (namespace {NAMESPACE})"
        )
        worker = _start_worker(found)
        try:
            return _drive(documents)
        finally:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
            _cleanup()
            app.close()


def _drive(documents: int) -> int:
    docs = [f"doc-{i}" for i in range(1, documents + 1)] + ["doc-poison"]
    started = time.monotonic()
    handles = [pipeline(d) for d in docs]
    report = send_report.enqueue_in(2.0, documents)
    console.print(f"enqueued {len(handles)} pipelines (chains of 4 stages); a report is due in 2 s")
    table = Table(title="pipeline results (extract -> analyze -> summarize -> embed)")
    for col in ("document", "stages", "result"):
        table.add_column(col)
    failures = 0
    for doc, handle in zip(docs, handles, strict=True):
        try:
            value = handle.result(timeout=30)
            table.add_row(doc, str(len(handle.jobs)), str(value.get("vector")))
        except JobFailed as exc:
            failures += 1
            table.add_row(doc, "dead", f"[red]{exc.error}[/red]")
    console.print(table)
    console.print(f"delayed job: {report.result(timeout=30)}")
    dead = dead_letters.list_dead(app, "analyze")
    console.print(f"dead-letter stream of 'analyze': {len(dead)} job(s)")
    for d in dead:
        console.print(f"  {d.job_id}: {d.reason}: {d.error} (attempts: {d.fields.get('attempt')})")
        console.print(f"    {d.fields.get('dead_workflow')}: `conveyor dead replay` resumes it")
    for q in STAGES:
        s = stats.queue_stats(app, q)
        console.print(
            f"  queue {q:<10} ready {s.ready}  running {s.running}  delayed {s.delayed}  "
            f"dead {s.dead}"
        )
    ok = failures == 1 and len(dead) == 1
    elapsed = time.monotonic() - started
    console.print(
        f"[bold {'green' if ok else 'red'}]{len(docs) - failures} documents through 4 stages, "
        f"1 dead-lettered as expected, in {elapsed:.1f}s[/]"
        if ok
        else f"[bold red]unexpected outcome: {failures} failures, {len(dead)} dead[/]"
    )
    return 0 if ok else 1
