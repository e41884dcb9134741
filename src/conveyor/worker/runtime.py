"""The worker runtime: one asyncio loop per process with ``concurrency`` slots.

This module holds the Worker's lifecycle: start, the slot loops, stop and crash. The rooms
around it: fetcher.py (reading jobs), delivery.py (one job to its end), shutdown.py (handing
back what it holds), lease.py, maintenance.py, completer.py.

A worker that can no longer do its work (a slot, the fetch loop or the completer ended, or
too many sync task threads are stuck) stops and raises WorkerCrashed, so its process exits
non-zero and the supervisor starts a fresh one; its jobs are handed back or left reclaimable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
import sys
import threading
from dataclasses import asdict
from typing import Any, TypeVar

from ..app import Conveyor
from ..broker import Broker, operations
from ..broker.operations import Delivery
from ..errors import WorkerCrashed
from ..keys import LEVELS, QueueKeys
from ..settings import WorkerSettings
from . import gc_tuning
from .acklag import AckLag
from .completer import Completer
from .delivery import DeliveryRunner
from .executor import Executor, Outcome
from .fetcher import Fetcher
from .flow import FlowState
from .lease import HeldJobs, LeaseKeeper
from .lifecycle import Lifecycle
from .lifetime import RECYCLE_EXIT, Lifetime
from .maintenance import Maintenance
from .process_pool import ProcessPool, ProcessPoolSettings
from .registry import LiveTasks
from .shutdown import shut_down
from .slots import Handoff
from .threads import THREAD_PREFIX, TaskThreads
from .transitions import Transitions
from .turns import TurnBudget

log = logging.getLogger("conveyor.worker")
T = TypeVar("T")

#: Jobs all slots together start in one event-loop turn, and how long a turn may go on
#: starting them (see turns.py): a turn stays short at any concurrency, so ack and fetch
#: replies are read within a millisecond or two.
YIELD_BUDGET = 32
TURN_SECONDS = 0.002
#: A job for a task no live worker registers is dead-lettered after this many lease
#: timeouts (a registry entry outlives its worker by at most two).
UNKNOWN_TASK_LEASES = 3


def app_queues(app: Conveyor) -> tuple[str, ...]:
    """Every queue the app's tasks use (the default queue when none is registered)."""
    return tuple(sorted({t.options.queue for t in app.tasks.values()} or {app.default_queue}))


def consumer_name() -> str:
    """Unique per process start, so a restarted worker never inherits a dead one's PEL."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class Worker:
    """Runs jobs from one or more queues until ``stop()`` (or SIGTERM/SIGINT) is received,
    or until its burst, job or memory limit ends it (see lifetime.py).

    ``settings`` None takes the app's defaults (``Conveyor(..., worker=WorkerSettings())``).
    """

    def __init__(
        self, app: Conveyor, settings: WorkerSettings | None = None, *, name: str | None = None
    ) -> None:
        self.app = app
        self.settings = settings or app.worker_settings
        self.queues = self.settings.queues or app_queues(app)
        self.consumer = name or consumer_name()
        self.broker: Broker = app.broker
        self.keys: dict[str, QueueKeys] = {q: app.keys(q) for q in self.queues}
        self.held = HeldJobs()
        # Bounds the XPENDING replies used for owner checks, never what a worker may hold.
        self.pel_limit = 100_000
        concurrency = self.settings.concurrency
        threads: TaskThreads[Outcome] = TaskThreads(max(4, concurrency), self._threads_stuck)
        #: subprocesses for tasks with executor="process" (none unless a task asks)
        self.pool: ProcessPool | None = None
        if any(t.options.executor == "process" for t in app.tasks.values()):
            self.pool = ProcessPool(ProcessPoolSettings(size=self.settings.pool_size))
        self.executor = Executor(threads, self.pool, app.task_wrappers)
        self.flow = FlowState()
        self.completer = Completer(self.broker, self.keys, self.consumer, self._acks_stored)
        self.maintenance = Maintenance(self)
        self.counts = {"done": 0, "retried": 0, "dead": 0, "lost": 0, "cancelled": 0}
        leases = self.settings.leases
        self.transitions = Transitions(
            self.broker,
            self.keys,
            self.consumer,
            app.signer,
            self.counts,
            bounce_delay=min(1.0, leases.renew_every),
            unknown_task_wait=UNKNOWN_TASK_LEASES * leases.timeout,
        )
        #: the hooks' view of each job (hooks, metrics, traces, events); None when off
        self.lifecycle = Lifecycle.of(app, self.consumer, self.broker)
        self.transitions.lifecycle = self.lifecycle
        self.live_tasks = LiveTasks(self.broker, app.namespace, min(1.0, leases.renew_every))
        self.turns = TurnBudget(YIELD_BUDGET, TURN_SECONDS)
        self.handoff = Handoff(self.turns)
        self.runner = DeliveryRunner(self)
        self.fetcher = Fetcher(self)
        #: what each busy slot is running, by slot number
        self.running: dict[int, Delivery] = {}
        self.slots: list[asyncio.Task[None]] = []
        self.slot_free = asyncio.Event()
        self.stopping = asyncio.Event()
        self.streams = {
            keys.stream(level): (q, level) for q, keys in self.keys.items() for level in LEVELS
        }
        self.lease: LeaseKeeper | None = None
        #: why the worker stopped on its own, raised by run() once its jobs are handed back
        self.crash: WorkerCrashed | None = None
        self.ready = asyncio.Event()
        #: burst, max_jobs and max_memory_mb; its ``reason`` says why the worker ended
        self.lifetime = Lifetime(self)

    # -- lifecycle ----------------------------------------------------------------------------
    async def run(self, *, handle_signals: bool = False) -> None:
        info = await self.broker.aserver_info()
        log.info(
            "worker %s on %s (%s %s): queues %s, concurrency %d",
            self.consumer,
            self.broker.url,
            info.engine,
            ".".join(map(str, info.version)),
            ",".join(self.queues),
            self.settings.concurrency,
            extra={"settings": asdict(self.settings)},
        )
        await self.ensure_groups()
        self.lease = LeaseKeeper(
            Broker(self.broker.url, self.broker.options),
            self.keys,
            self.consumer,
            self.held,
            self.settings.leases,
            self.app.namespace,
            self.pel_limit,
            self.queues,
            info=self._registry_info,
            flow=self.flow,
            loop=asyncio.get_running_loop(),
            kill=self.pool.cancel if self.pool is not None else None,
        )
        if self.pool is not None:
            await self.pool.start()
        self.lease.start()
        await self.completer.warm_up()
        self.completer.start()
        self.completer.on_exit(self._part_ended)
        self.maintenance.start()
        if self.lifecycle is not None:
            self.lifecycle.start()
        loop = asyncio.get_running_loop()
        self.slots = [
            loop.create_task(self._slot(n), name=f"conveyor-slot-{n}")
            for n in range(self.settings.concurrency)
        ]
        for slot in self.slots:
            slot.add_done_callback(self._part_ended)
        if handle_signals:
            self._install_signals()
        self.ready.set()
        self.lifetime.start()
        try:
            await self.fetcher.loop()
        except Exception as exc:
            self._crashed("the fetch loop", exc)
        finally:
            await self.lifetime.stop()
            await shut_down(self)
            if self.lifecycle is not None:
                await self.lifecycle.close()
        if self.crash is not None:
            raise self.crash

    def stop(self) -> None:
        """Stop fetching; running jobs get ``shutdown_grace`` seconds to finish."""
        if not self.stopping.is_set():
            log.info("worker %s stopping: finishing running jobs", self.consumer)
        self.stopping.set()
        self.handoff.close()
        self.turns.release_all()
        self.slot_free.set()
        self.fetcher.unblock()

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)

    async def ensure_groups(self) -> None:
        await self.broker.acall_many([operations.ensure_group(s) for s in self.streams])

    def _registry_info(self) -> dict[str, Any]:
        """What the live-workers registry shows of this worker besides its queues."""
        return {
            "tasks": sorted(self.app.tasks),
            "concurrency": self.settings.concurrency,
            "stuck_threads": self.executor.threads.stuck,
            **(
                {"pool": {"pids": self.pool.pids, "ready": self.pool.ready}}
                if self.pool is not None
                else {}
            ),
        }

    # -- crashes ------------------------------------------------------------------------------
    def _crashed(self, what: str, error: BaseException | None) -> None:
        if self.crash is None:
            detail = f": {type(error).__name__}: {error}" if error is not None else ""
            self.crash = WorkerCrashed(
                f"{what} of worker {self.consumer} ended while the worker was running{detail}; "
                "the worker stopped (its jobs are handed back or reclaimable), restart it "
                "(`conveyor worker` restarts its processes on its own)"
            )
            if error is not None:
                self.crash.__cause__ = error
        log.error("%s ended while the worker was running", what, exc_info=error)
        if self.stopping.is_set():
            return
        with contextlib.suppress(RuntimeError):  # no running loop: the worker is gone
            self.stop()

    def _part_ended(self, part: asyncio.Task[None]) -> None:
        """A slot or the completer ended: fine while stopping, a crash otherwise."""
        error = None if part.cancelled() else part.exception()
        if error is None and self.handoff.closed:
            return
        if error is None and part.cancelled():
            error = asyncio.CancelledError()
        self._crashed(f"task {part.get_name()}", error)

    def _threads_stuck(self, stuck: int) -> None:
        message = f"{stuck} sync task threads are stuck past their timeouts"
        asyncio.get_running_loop().call_soon(self._crashed, message, None)

    # -- slots --------------------------------------------------------------------------------
    def dispatch(self, d: Delivery) -> None:
        """Take a delivery: a free slot runs it, else it waits (its lease is kept)."""
        self.held.add(d.queue, d.level, d.entry_id)
        self.handoff.put(d)

    def free_slots(self) -> int:
        return self.fetcher.free_slots()

    def _acks_stored(self) -> None:
        """A flush landed: the fetcher may have waited for room that acks just made."""
        self.slot_free.set()

    @property
    def ack_lag(self) -> AckLag:
        """How long finished jobs waited for their acks (see acklag.py), kept in memory."""
        return self.completer.lag

    def job_took(self, seconds: float) -> None:
        self.fetcher.job_took(seconds)
        self.lifetime.job_ended()

    async def _slot(self, n: int) -> None:
        """One slot: run deliveries one after another until the worker stops.

        Every job start spends one unit of the turn budget all slots share (turns.py): a
        job that never awaits does not give the loop back, so without it hundreds of slots
        would each run jobs in one turn while ack and fetch replies wait unread.
        """
        handoff = self.handoff
        process = self.runner.process
        turns = self.turns
        me = asyncio.current_task()  # once per slot: a cancel of an async job cancels it
        while True:
            d = handoff.take()
            if d is None:
                d = await handoff.next()
                if d is None:
                    return
            # Held as running while it waits for its turn: a stop then waits for it (or
            # requeues it) like any started job, and stop() wakes it at once.
            self.running[n] = d
            try:
                if not turns.take():
                    await turns.wait()
                await process(d, me)
            except Exception:
                log.exception("internal error while processing a job")
            finally:
                del self.running[n]
                self.slot_free.set()


async def run_worker(
    app: Conveyor, settings: WorkerSettings | None = None, *, handle_signals: bool = True
) -> None:
    """Run one worker in this process until SIGTERM/SIGINT."""
    await Worker(app, settings).run(handle_signals=handle_signals)


def serve(app: Conveyor, settings: WorkerSettings | None = None) -> None:
    """Run a worker as this process's main job until SIGTERM/SIGINT, then end the process.

    Python cannot stop a thread: a sync task still running after the shutdown grace (its
    job already handed back) would keep the process alive, so the process exits without
    waiting for it. A crashed worker ends the process with status 1, one that reached its
    job or memory limit with RECYCLE_EXIT (the supervisor starts a fresh one), a drained
    burst worker with 0.
    """
    code = 0
    worker = Worker(app, settings)
    gc_tuning.tune()
    try:
        asyncio.run(worker.run(handle_signals=True))
    except WorkerCrashed as exc:
        log.error("%s", exc)
        code = 1
    else:
        if worker.lifetime.recycled:
            code = RECYCLE_EXIT
    exit_if_task_threads_linger(code)
    if code:
        sys.exit(code)


def exit_if_task_threads_linger(code: int = 0) -> None:
    """End the process now (with ``code``) if sync task threads outlived a worker's shutdown."""
    stuck = [t for t in threading.enumerate() if t.name.startswith(THREAD_PREFIX)]
    for t in stuck:
        t.join(0.5)
    if any(t.is_alive() for t in stuck):
        log.warning("exiting with sync task threads still running (their jobs were requeued)")
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
