"""A chaos worker process: ``python -m tests.chaos.worker --url URL --ledger-dir DIR [...]``.

Runs ``conveyor.worker.Worker(app, WorkerSettings(...)).run(handle_signals=True)`` with the
chaos tasks registered, writing its ledger to ``DIR/worker-<pid>.ledger``. The harness starts
it with ``subprocess.Popen`` and signals it by pid only.

``--naive-noack`` runs a deliberately unsafe consumer instead (XREADGROUP ... NOACK, then run
the task): a negative control that must lose jobs when it is killed.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import redis
import redis.asyncio

from conveyor import Leases, Retention, WorkerSettings
from conveyor.broker import ClientOptions
from conveyor.keys import GROUP
from conveyor.wire import decode_fields
from conveyor.worker import Worker

from . import tasks
from .ledger import Ledger


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.chaos.worker", description=__doc__)
    p.add_argument("--url", required=True)
    p.add_argument("--ledger-dir", required=True)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--lease", type=float, default=3.0)
    p.add_argument("--grace", type=float, default=10.0)
    p.add_argument("--block-ms", type=int, default=500)
    p.add_argument("--keep-count", type=int, default=10_000)
    p.add_argument("--keep-seconds", type=float, default=0.0)
    p.add_argument("--trim-every", type=float, default=1.0)
    p.add_argument("--max-trim", type=int, default=10_000)
    p.add_argument("--max-payload", type=int, default=1 << 20)
    p.add_argument("--promote-every", type=float, default=0.2)
    p.add_argument("--socket-timeout", type=float, default=None)
    p.add_argument("--log-level", default="WARNING")
    p.add_argument("--naive-noack", action="store_true")
    return p.parse_args(argv)


def make_app(args: argparse.Namespace) -> Any:
    extra: dict[str, Any] = {}
    if args.socket_timeout is not None:
        extra["client_options"] = ClientOptions(socket_timeout=args.socket_timeout)
    return tasks.chaos_app(args.url, max_payload_bytes=args.max_payload, **extra)


async def run_worker(args: argparse.Namespace, ledger: Ledger) -> None:
    app = make_app(args)
    settings = WorkerSettings(
        queues=(tasks.QUEUE,),
        concurrency=args.concurrency,
        leases=Leases(timeout=args.lease),
        retention=Retention(
            keep_count=args.keep_count,
            keep_seconds=args.keep_seconds,
            trim_every=args.trim_every,
            max_trim=args.max_trim,
        ),
        shutdown_grace=args.grace,
        block_ms=args.block_ms,
        promote_every=args.promote_every,
        max_payload_bytes=args.max_payload,
    )
    worker = Worker(app, settings)
    pid = os.getpid()
    ledger.write(f"BOOT {pid} {worker.consumer} {time.time():.6f}")
    run = asyncio.create_task(worker.run(handle_signals=True))
    ready = asyncio.create_task(worker.ready.wait())
    await asyncio.wait({run, ready}, return_when=asyncio.FIRST_COMPLETED)
    if ready.done():
        ledger.write(f"READY {pid} {worker.consumer} {time.time():.6f}")
        print(f"READY {worker.consumer} {pid}", flush=True)
    else:
        ready.cancel()
    try:
        await run
    finally:
        counts = ",".join(f"{k}={v}" for k, v in worker.counts.items())
        ledger.write(f"EXIT {pid} {worker.consumer} {time.time():.6f} {counts}")
        print(f"EXIT {worker.consumer} {counts}", flush=True)
        await app.aclose()


async def run_naive(args: argparse.Namespace, ledger: Ledger) -> None:
    """NEGATIVE CONTROL: read with NOACK (nothing enters the PEL), then run. Unsafe on purpose."""
    app = make_app(args)
    r = redis.asyncio.Redis.from_url(args.url)
    stream = app.keys(tasks.QUEUE).stream("normal")
    try:
        await r.xgroup_create(stream, GROUP, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise
    pid = os.getpid()
    consumer = f"naive-noack-{pid}"
    ledger.write(f"BOOT {pid} {consumer} {time.time():.6f}")
    print(f"READY {consumer} {pid}", flush=True)
    while True:
        reply = await r.xreadgroup(
            GROUP, consumer, {stream: ">"}, count=args.concurrency, block=500, noack=True
        )
        runs = []
        for _stream, entries in reply or []:
            for _entry_id, fields in entries:
                env = decode_fields(fields)
                task = app.tasks[env.task]
                a, kw = task.bind(env.args, env.kwargs)
                runs.append(task.fn(*a, **kw))
        await asyncio.gather(*runs, return_exceptions=True)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        stream=sys.stderr,
        format=f"%(asctime)s pid={os.getpid()} %(levelname)s %(name)s: %(message)s",
    )
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    ledger = Ledger(Path(args.ledger_dir) / f"worker-{os.getpid()}.ledger")
    tasks.LEDGER = ledger
    try:
        asyncio.run(run_naive(args, ledger) if args.naive_noack else run_worker(args, ledger))
    finally:
        ledger.close()


if __name__ == "__main__":
    main()
