"""Tasks and a worker process for the workflow kill runs (tests/workflows_kill.py).

``python -m tests.workflow_tasks --url URL --namespace NS --ledger PATH`` runs a worker of
this app. Each task appends ``<step> <key> <pid>`` to the ledger file when its side effect is
done (outside Redis, so the runs of SIGKILLed processes are counted too) and returns a value
the next step or the chord's callback checks.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random

from conveyor import Conveyor, Leases, Retention, WorkerSettings
from conveyor.worker import Worker

app = Conveyor(namespace="wfkill")
#: queue of each stage: two share one (their handoff is in the ack), the next is elsewhere
DOCS, TEXT, MERGE = "wf-docs", "wf-text", "wf-merge"
OPTS = {"retries": 0, "max_deliveries": 1000}


def ledger(step: str, key: str) -> None:
    line = f"{step} {key} {os.getpid()}\n".encode()
    fd = os.open(os.environ["WF_LEDGER"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)  # one small O_APPEND write: whole lines, even across processes
    finally:
        os.close(fd)


#: each task's side effect takes this long (ms, drawn uniformly), so kills land mid-job
WORK_MS = (10.0, 50.0)


async def work() -> None:
    await asyncio.sleep(random.uniform(*WORK_MS) / 1000)


@app.task(queue=DOCS, **OPTS)  # type: ignore[arg-type]
async def extract(doc: int) -> int:
    await work()
    ledger("extract", str(doc))
    return doc * 10


@app.task(queue=DOCS, **OPTS)  # type: ignore[arg-type]
async def analyze(x: int, doc: int) -> int:
    await work()
    ledger("analyze", str(doc))
    return x + 1


@app.task(queue=TEXT, **OPTS)  # type: ignore[arg-type]
async def summarize(x: int, doc: int) -> int:
    await work()
    ledger("summarize", str(doc))
    return x * 2


@app.task(queue=TEXT, **OPTS)  # type: ignore[arg-type]
async def embed(x: int, doc: int) -> int:
    await work()
    ledger("embed", str(doc))
    return x + 3


def expected_chain(doc: int) -> int:
    return (doc * 10 + 1) * 2 + 3


@app.task(queue=DOCS, **OPTS)  # type: ignore[arg-type]
async def member(chord: int, i: int) -> int:
    await work()
    ledger("member", f"{chord}/{i}")
    return chord * 1000 + i


@app.task(queue=MERGE, **OPTS)  # type: ignore[arg-type]
async def merge(values: list[int], chord: int, size: int) -> bool:
    ok = values == [chord * 1000 + i for i in range(size)]
    ledger("merge", f"{chord}/{'ok' if ok else 'BAD'}")
    return ok


async def amain(args: argparse.Namespace) -> None:
    app.rebind(url=args.url, namespace=args.namespace)
    settings = WorkerSettings(
        queues=(DOCS, TEXT, MERGE),
        concurrency=args.concurrency,
        leases=Leases(timeout=args.lease),
        retention=Retention(keep_count=10_000_000),
        shutdown_grace=5.0,
        block_ms=200,
        promote_every=0.1,
    )
    worker = Worker(app, settings)
    run = asyncio.create_task(worker.run(handle_signals=True))
    ready = asyncio.create_task(worker.ready.wait())
    await asyncio.wait({run, ready}, return_when=asyncio.FIRST_COMPLETED)
    if ready.done():
        print(f"READY {worker.consumer} {os.getpid()}", flush=True)
    await run
    print(f"EXIT {worker.consumer} counts={worker.counts}", flush=True)
    await app.aclose()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--url", required=True)
    p.add_argument("--namespace", required=True)
    p.add_argument("--lease", type=float, default=2.0)
    p.add_argument("--concurrency", type=int, default=4)
    asyncio.run(amain(p.parse_args()))


if __name__ == "__main__":
    main()
