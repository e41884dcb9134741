"""A real worker process for the reliability tests: ``python -m tests.workerproc --namespace NS``.

The tests start it with ``subprocess.Popen`` and then kill, stop, freeze or signal it by pid.
Its tasks leave markers in a Redis list (``<namespace>:markers``), one line per event:

    START <tag> <pid> <redis_ms>     the task function began running in process <pid>
    DONE <tag> <pid> <redis_ms>      the task function returned in process <pid>

``--app MODULE:APP`` runs that app (rebound to the URL and namespace) instead of this
module's, as ``conveyor worker`` would: two versions of an app make a rolling deploy.

``ledger`` appends its number to a file (runs counted outside Redis); ``noop`` and ``naps``
(a 1 ms await) are fast jobs for the ack tests; on exit the worker prints
``EXIT <consumer> counts=... ack_lag=<json>``.

``redis_ms`` is Redis' clock, so tests can time events without trusting any process' clock.
Once the worker is fetching it prints ``READY <consumer> <pid>`` on stdout.

Options come from argv, falling back to the environment (CONVEYOR_REDIS_URL, TEST_NAMESPACE,
TEST_LEASE, TEST_CONCURRENCY, TEST_GRACE, TEST_BLOCK_MS, TEST_CLOCK_SKEW).
``--clock-skew S`` shifts this process' ``time.time()`` by S seconds, as a badly set clock would.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import json
import logging
import os
import signal
import sys
import time
from typing import Any

import redis

from conveyor import Conveyor, Leases, Retention, WorkerSettings
from conveyor.worker import Worker
from conveyor.worker.loader import load_app
from conveyor.worker.runtime import exit_if_task_threads_linger

_clients: dict[str, redis.Redis] = {}


def markers_key(namespace: str) -> str:
    return f"{namespace}:markers"


def starts_key(namespace: str, tag: str) -> str:
    return f"{namespace}:starts:{tag}"


def register_tasks(app: Conveyor) -> None:
    """The test tasks. The tests register them on their own app too, to enqueue by name."""
    ns = app.namespace

    def client() -> redis.Redis:
        c = _clients.get(app.url)
        if c is None:
            c = _clients[app.url] = redis.Redis.from_url(app.url)
        return c

    def mark(event: str, tag: str) -> int:
        """Record an event; returns how many times the task with this tag has started."""
        c = client()
        secs, micros = c.time()
        c.rpush(markers_key(ns), f"{event} {tag} {os.getpid()} {secs * 1000 + micros // 1000}")
        return int(c.incr(starts_key(ns, tag))) if event == "START" else 0

    @app.task(retries=0)
    async def record(tag: str, seconds: float = 0.0, again: float | None = None) -> dict[str, Any]:
        """Sleep ``seconds`` on the first run of ``tag``; ``again`` seconds on any later run."""
        starts = mark("START", tag)
        await asyncio.sleep(seconds if starts == 1 or again is None else again)
        mark("DONE", tag)
        return {"tag": tag, "pid": os.getpid()}

    @app.task(retries=0)
    def sync_sleepy(tag: str, seconds: float = 0.0, again: float | None = None) -> dict[str, Any]:
        """Like ``record`` but blocking in a worker thread (time.sleep)."""
        starts = mark("START", tag)
        time.sleep(seconds if starts == 1 or again is None else again)
        mark("DONE", tag)
        return {"tag": tag, "pid": os.getpid()}

    @app.task(retries=0)
    def cpu_bound(tag: str, seconds: float) -> dict[str, Any]:
        """A pure-Python busy loop holding the GIL for ``seconds``."""
        mark("START", tag)
        end = time.monotonic() + seconds
        spins = 0
        while time.monotonic() < end:
            for i in range(1000):
                spins += i & 1
        mark("DONE", tag)
        return {"tag": tag, "pid": os.getpid(), "spins": spins}

    @app.task(retries=0)
    def quits(tag: str) -> None:
        """A sync task that calls sys.exit: its job's failure, never the worker's end."""
        mark("START", tag)
        sys.exit(3)

    @app.task(retries=0)
    async def interrupts(tag: str) -> None:
        """An async task raising KeyboardInterrupt (asyncio re-raises it out of the loop)."""
        mark("START", tag)
        raise KeyboardInterrupt

    @app.task(retries=0)
    async def cancels_its_slot(tag: str) -> None:
        """Cancel the asyncio task running this job (the worker's slot), then return."""
        mark("START", tag)
        current = asyncio.current_task()
        assert current is not None
        current.cancel()
        mark("DONE", tag)

    @app.task(retries=0, timeout=0.5)
    def stuck_sync(tag: str, seconds: float) -> None:
        """Blocks its thread far past its timeout, as a hung call would."""
        mark("START", tag)
        time.sleep(seconds)
        mark("DONE", tag)

    @app.task(retries=0, timeout=1.0)
    def quick_sync(tag: str) -> dict[str, Any]:
        mark("START", tag)
        mark("DONE", tag)
        return {"tag": tag, "pid": os.getpid()}

    @app.task(retries=0)
    async def noop() -> None:
        """Nothing at all: the worker's own cost per job."""

    @app.task(retries=0)
    async def naps() -> None:
        """A 1 ms await, like a fast I/O call."""
        await asyncio.sleep(0.001)

    @app.task(retries=0)
    async def ledger(path: str, i: int) -> None:
        """Append ``i`` to the file at ``path``: a count of runs kept outside Redis."""
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, b"%d\n" % i)
        finally:
            os.close(fd)

    @app.task(retries=0, max_deliveries=2)
    def suicide(tag: str) -> None:
        """Kill the worker process running it, every time it runs."""
        mark("START", tag)
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(10)  # pragma: no cover - never reached


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--url", default=env("CONVEYOR_REDIS_URL", "redis://127.0.0.1:6379/0"))
    p.add_argument("--namespace", default=env("TEST_NAMESPACE"), required=not env("TEST_NAMESPACE"))
    p.add_argument("--queues", default=env("TEST_QUEUES", "default"))
    p.add_argument("--lease", type=float, default=float(env("TEST_LEASE", "1.0")))
    p.add_argument("--concurrency", type=int, default=int(env("TEST_CONCURRENCY", "4")))
    p.add_argument("--grace", type=float, default=float(env("TEST_GRACE", "10")))
    p.add_argument("--block-ms", type=int, default=int(env("TEST_BLOCK_MS", "500")))
    p.add_argument("--clock-skew", type=float, default=float(env("TEST_CLOCK_SKEW", "0")))
    p.add_argument("--app", default=None, help="MODULE:APP to run instead of this module's")
    return p.parse_args(argv)


def skew_clock(seconds: float) -> None:
    """Make this process' wall clock wrong by ``seconds`` (monotonic time is left alone)."""
    real = time.time
    time.time = lambda: real() + seconds  # type: ignore[assignment]


def dump_tasks() -> None:
    """On SIGUSR2: print every asyncio task's stack to stderr (diagnostics of a hang)."""
    for t in asyncio.all_tasks():
        print(f"--- task {t.get_name()}: {t!r}", file=sys.stderr)
        t.print_stack(file=sys.stderr)
    sys.stderr.flush()


async def amain(args: argparse.Namespace) -> None:
    if args.app:
        app = load_app(args.app)
        app.rebind(url=args.url, namespace=args.namespace)
    else:
        app = Conveyor(args.url, namespace=args.namespace)
        register_tasks(app)
    settings = WorkerSettings(
        queues=tuple(q for q in args.queues.split(",") if q),
        concurrency=args.concurrency,
        leases=Leases(timeout=args.lease),
        retention=Retention(trim_every=1.0),
        shutdown_grace=args.grace,
        block_ms=args.block_ms,
        promote_every=0.1,
    )
    worker = Worker(app, settings)
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR2, dump_tasks)
    run = asyncio.create_task(worker.run(handle_signals=True))
    ready = asyncio.create_task(worker.ready.wait())
    await asyncio.wait({run, ready}, return_when=asyncio.FIRST_COMPLETED)
    if ready.done():
        print(f"READY {worker.consumer} {os.getpid()}", flush=True)
    else:
        ready.cancel()
    try:
        await run
    finally:
        lag = json.dumps(worker.ack_lag.summary())
        print(f"EXIT {worker.consumer} counts={worker.counts} ack_lag={lag}", flush=True)
        await app.aclose()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.clock_skew:
        skew_clock(args.clock_skew)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format=f"%(asctime)s pid={os.getpid()} %(levelname)s %(name)s: %(message)s",
    )
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # stack dump for diagnostics
    asyncio.run(amain(args))
    exit_if_task_threads_linger()


if __name__ == "__main__":
    main()
