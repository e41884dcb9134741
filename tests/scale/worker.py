"""A worker process for the failover runs: ``python -m tests.scale.worker URL NS DIR N``.

Its one task, ``job(seq)``, appends ``DONE <seq> <pid> <unix time>`` to this process' ledger
file (on local disk, outside the Redis under test) before it returns, so the runner can count
runs (lost: never ran; duplicated: ran more than once) whatever Redis lost in the failover.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

from conveyor import Conveyor, Leases, Retention, WorkerSettings
from conveyor.worker import Worker

QUEUES = tuple(f"q{i}" for i in range(16))


def make_app(url: str, namespace: str, ledger_dir: str | None = None) -> Conveyor:
    app = Conveyor(url, namespace=namespace)
    fd = -1
    if ledger_dir is not None:
        path = os.path.join(ledger_dir, f"worker-{os.getpid()}.ledger")
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    @app.task(retries=3)
    async def job(seq: int) -> int:
        await asyncio.sleep(0.001)
        os.write(fd, f"DONE {seq} {os.getpid()} {time.time():.3f}\n".encode())
        return seq

    return app


async def amain(url: str, namespace: str, ledger_dir: str, queues: int) -> None:
    app = make_app(url, namespace, ledger_dir)
    settings = WorkerSettings(
        queues=QUEUES[:queues],
        concurrency=32,
        leases=Leases(timeout=5.0),
        retention=Retention(trim_every=1.0),
        shutdown_grace=5.0,
        block_ms=500,
        promote_every=0.2,
    )
    worker = Worker(app, settings)
    run = asyncio.create_task(worker.run(handle_signals=True))
    await worker.ready.wait()
    print(f"READY {worker.consumer} {os.getpid()}", flush=True)
    await run


if __name__ == "__main__":
    asyncio.run(amain(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
