"""The worker runtime: fetch jobs, run them in slots, and end each delivery atomically.

One asyncio loop per process with ``concurrency`` slots. Jobs are read with XREADGROUP
(COUNT = free slots) through the fetch script, which drains higher priority levels first;
when nothing is ready the worker blocks on all its streams at once.
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
import time
from dataclasses import replace
from typing import Any, TypeVar

import redis

from ..app import Conveyor
from ..broker import Broker, command, operations, text
from ..broker.operations import Completion, Delivery
from ..context import JobContext
from ..errors import ConnectionFailed, PayloadError
from ..keys import LEVELS, QueueKeys, job_id_for
from ..settings import WorkerSettings
from ..wire import decode_fields
from . import outcomes
from .cancellation import cancel_and_wait
from .completer import Completer
from .executor import Executor, Outcome
from .lease import HeldJobs, LeaseKeeper
from .maintenance import Maintenance
from .slots import Handoff
from .transitions import DEFAULTS, RECONNECT, Transitions

log = logging.getLogger("conveyor.worker")
T = TypeVar("T")

#: An adaptive prefetch buffer holds at most about this much work, at the recent mean job
#: time (see WorkerSettings.prefetch): enough to cover a fetch's round trip behind other
#: workers' calls, too little to sit on jobs an idle worker could start.
PREFETCH_SECONDS = 0.05
#: Jobs all slots together run back to back before the event loop polls for I/O again:
#: each slot yields after its share, so a fetch's reply is read while work remains.
YIELD_BUDGET = 160


def app_queues(app: Conveyor) -> tuple[str, ...]:
    """Every queue the app's tasks use (the default queue when none is registered)."""
    return tuple(sorted({t.options.queue for t in app.tasks.values()} or {app.default_queue}))


def consumer_name() -> str:
    """Unique per process start, so a restarted worker never inherits a dead one's PEL."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class Worker:
    """Runs jobs from one or more queues until ``stop()`` (or SIGTERM/SIGINT) is received."""

    def __init__(
        self, app: Conveyor, settings: WorkerSettings | None = None, *, name: str | None = None
    ) -> None:
        self.app = app
        self.settings = settings or WorkerSettings()
        self.queues = self.settings.queues or app_queues(app)
        self.consumer = name or consumer_name()
        self.broker: Broker = app.broker
        self.keys: dict[str, QueueKeys] = {q: app.keys(q) for q in self.queues}
        self.held = HeldJobs()
        # Bounds the XPENDING replies used for owner checks, never what a worker may hold.
        self.pel_limit = 100_000
        self.executor = Executor(self.settings.concurrency)
        self.completer = Completer(self.broker, self.keys, self.consumer)
        self.maintenance = Maintenance(self)
        self.counts = {"done": 0, "retried": 0, "dead": 0, "lost": 0}
        self.transitions = Transitions(
            self.broker, self.keys, self.consumer, app.signer, self.counts
        )
        self._handoff = Handoff()
        # Mean run time of recent jobs; starts long, so little or nothing is prefetched
        # until jobs have shown they are short.
        self._mean_job_seconds = 1.0
        # What each busy slot is running, by slot number.
        self._running: dict[int, Delivery] = {}
        self._slots: list[asyncio.Task[None]] = []
        self._slot_free = asyncio.Event()
        self._background: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self._streams = {
            keys.stream(level): (q, level) for q, keys in self.keys.items() for level in LEVELS
        }
        self._lease: LeaseKeeper | None = None
        # Blocking reads get a connection of their own, so stop() can end one at once with
        # CLIENT UNBLOCK instead of waiting out its BLOCK timeout.
        options = self.broker.options
        self._blocker = Broker(
            self.broker.url,
            replace(options, extra={**options.extra, "single_connection_client": True}),
        )
        self._blocker_id: int | None = None
        self.ready = asyncio.Event()

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
        )
        await self._ensure_groups()
        self._lease = LeaseKeeper(
            Broker(self.broker.url, self.broker.options),
            self.keys,
            self.consumer,
            self.held,
            self.settings.leases,
            self.app.namespace,
            self.pel_limit,
            self.queues,
        )
        self._lease.start()
        self.completer.start()
        self.maintenance.start()
        loop = asyncio.get_running_loop()
        self._slots = [
            loop.create_task(self._slot(n), name=f"conveyor-slot-{n}")
            for n in range(self.settings.concurrency)
        ]
        for slot in self._slots:
            slot.add_done_callback(self._slot_ended)
        if handle_signals:
            self._install_signals()
        self.ready.set()
        try:
            await self._fetch_loop()
        finally:
            await self._shutdown()

    def stop(self) -> None:
        """Stop fetching; running jobs get ``shutdown_grace`` seconds to finish."""
        if not self._stopping.is_set():
            log.info("worker %s stopping: finishing running jobs", self.consumer)
        self._stopping.set()
        self._handoff.close()
        self._slot_free.set()
        if self._blocker_id is not None:
            blocker, self._blocker_id = self._blocker_id, None
            task = asyncio.get_running_loop().create_task(self._unblock(blocker))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _unblock(self, client_id: int) -> None:
        try:
            await self.broker.acall(command("CLIENT", "UNBLOCK", client_id))
        except Exception as exc:
            log.debug("could not unblock the fetch connection: %s", exc)

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)

    async def _ensure_groups(self) -> None:
        await self.broker.acall_many([operations.ensure_group(s) for s in self._streams])

    # -- fetching -----------------------------------------------------------------------------
    def _worth_fetching(self, free: int) -> bool:
        """Fetch at once for an idle slot; top up the prefetch buffer only in batches.

        Without this, every finished job would trigger a fetch of one job.
        """
        idle = len(self._running) < self.settings.concurrency and not self._handoff
        return idle or free >= max(1, self._prefetch_limit() // 4)

    def _prefetch_limit(self) -> int:
        fixed = self.settings.prefetch
        if fixed is not None:
            return fixed
        slots = self.settings.concurrency
        worth = int(PREFETCH_SECONDS * slots / self._mean_job_seconds)
        return min(worth, max(16 * slots, 256))

    def free_slots(self) -> int:
        """How many more jobs to fetch: free slots plus room in the prefetch buffer."""
        capacity = self.settings.concurrency + self._prefetch_limit()
        return capacity - len(self._running) - len(self._handoff)

    async def _fetch_loop(self) -> None:
        turn = 0
        queues = list(self.keys)
        failures = 0
        while not self._stopping.is_set():
            free = self.free_slots()
            if free <= 0 or not self._worth_fetching(free):
                self._slot_free.clear()
                await self._slot_free.wait()
                continue
            try:
                got: list[Delivery] = []
                for i in range(len(queues)):
                    keys = self.keys[queues[(turn + i) % len(queues)]]
                    batch = await self.broker.acall(
                        operations.fetch(keys, self.consumer, free - len(got))
                    )
                    got.extend(batch)
                    if len(got) >= free:
                        break
                turn += 1
                if not got:
                    if self._blocker_id is None:
                        self._blocker_id = await self._blocker.acall(
                            command("CLIENT", "ID", parse=int)
                        )
                    if self._stopping.is_set():
                        break
                    got = await self._blocker.acall(
                        operations.block_read(
                            self._streams, self.consumer, 1, self.settings.block_ms
                        )
                    )
                failures = 0
            except ConnectionFailed as exc:
                self._blocker_id = None
                failures += 1
                delay = RECONNECT.delay(failures)
                log.warning("Redis unreachable, retrying in %.2fs: %s", delay, exc)
                await self._pause(delay)
                continue
            except redis.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                log.warning("consumer group missing (stream deleted?); creating it again")
                await self._ensure_groups()
                continue
            for d in got:
                self.dispatch(d)
            await asyncio.sleep(0)  # let the slots start on these before the next fetch

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    def dispatch(self, d: Delivery) -> None:
        """Take a delivery: a free slot runs it, else it waits (its lease is kept)."""
        self.held.add(d.queue, d.level, d.entry_id)
        self._handoff.put(d)

    def _slot_ended(self, slot: asyncio.Task[None]) -> None:
        if not self._handoff.closed:
            error = None if slot.cancelled() else slot.exception()
            log.error("slot %s ended while the worker runs", slot.get_name(), exc_info=error)

    async def _slot(self, n: int) -> None:
        """One slot: run deliveries one after another until the worker stops.

        A job that never awaits anything does not give the loop back, so a slot yields
        after its share of YIELD_BUDGET such jobs: the loop then reads replies (the next
        fetch's above all) while buffered work remains, and acking goes on.
        """
        handoff = self._handoff
        share = max(1, YIELD_BUDGET // self.settings.concurrency)
        streak = 0
        while True:
            d = handoff.take()
            if d is None:
                streak = 0
                d = await handoff.next()
                if d is None:
                    return
            self._running[n] = d
            streak += 1
            try:
                if streak > share:
                    streak = 0
                    await asyncio.sleep(0)
                await self._process(d)
            except Exception:
                log.exception("internal error while processing a job")
            finally:
                del self._running[n]
                self._slot_free.set()

    # -- one job ------------------------------------------------------------------------------
    async def _process(self, d: Delivery) -> None:
        acking = False
        try:
            acking = await self._handle(d)
        finally:
            if not acking:
                self.held.discard(d.queue, d.level, d.entry_id)

    async def _handle(self, d: Delivery) -> bool:
        """Run one delivery to its end; True when its ack was handed to the completer.

        A successful job frees its slot as soon as its function returns: the batched ack
        runs behind it, overlapping the next fetch, and the lease is kept until it lands.
        """
        fallback_id = job_id_for(d.queue, d.level, d.entry_id)
        signer = self.app.signer
        if signer is not None and not signer.verify(d.fields):
            job_id = d.fields.get(b"id", b"").decode(errors="replace") or fallback_id
            reason = "entry is not signed with any of this app's keys"
            await self.transitions.dead(d, job_id, None, "bad_signature", reason)
            return False
        try:
            env = decode_fields(d.fields, max_bytes=self.settings.max_payload_bytes)
        except PayloadError as exc:
            await self.transitions.dead(d, fallback_id, None, "malformed", f"malformed job: {exc}")
            return False
        job_id = env.id or fallback_id
        task = self.app.tasks.get(env.task)
        limit = task.options.max_deliveries if task else DEFAULTS.max_deliveries
        if d.deliveries > limit:
            await self.transitions.dead(
                d,
                job_id,
                env,
                "max_deliveries",
                f"delivered {d.deliveries} times without finishing (max_deliveries={limit}); "
                "its worker probably crashed or was killed while running it",
            )
            return False
        if task is None:
            known = ", ".join(sorted(self.app.tasks)) or "none"
            await self.transitions.dead(
                d,
                job_id,
                env,
                "unknown_task",
                f"unknown task {env.task!r}: no worker of this app registers it (known: {known})",
            )
            return False
        try:
            args, kwargs = task.bind(env.args, env.kwargs)
        except PayloadError as exc:
            await self.transitions.dead(d, job_id, env, "bad_arguments", str(exc))
            return False
        log.debug("running %s %s args=%r kwargs=%r", task.name, job_id, args, kwargs)
        job = JobContext(job_id, task.name, d.queue, env.attempt, d.deliveries, self.consumer)
        started = time.perf_counter()
        outcome = await self.executor.run(task, args, kwargs, job)
        self._mean_job_seconds += 0.1 * (time.perf_counter() - started - self._mean_job_seconds)
        if outcome.ok:
            try:
                record = outcomes.done_record(env, outcome.value, self.consumer)
            except PayloadError as exc:
                outcome = Outcome(False, error=str(exc))
            else:
                ttl = int(task.options.result_ttl * 1000)
                self.completer.submit(
                    d.queue,
                    Completion(d.level, d.entry_id, job_id, record, ttl),
                    lambda stored: self._acked(d, job_id, stored),
                )
                return True
        await self.transitions.failed(d, env, task, job_id, outcome)
        return False

    def _acked(self, d: Delivery, job_id: str, stored: bool) -> None:
        self.held.discard(d.queue, d.level, d.entry_id)
        self.transitions.count("done" if stored else "lost", job_id)

    # -- shutdown -----------------------------------------------------------------------------
    async def _shutdown(self) -> None:
        grace = self.settings.shutdown_grace
        self._handoff.close()
        await self.maintenance.stop()  # no reclaim may hand out more work from here on
        for d in self._handoff.leftovers():
            await self._requeue(d)
        if self._running:
            log.info("waiting up to %.1fs for %d running job(s)", grace, len(self._running))
        pending: set[asyncio.Task[None]] = set()
        if self._slots:
            _, pending = await asyncio.wait(self._slots, timeout=grace)
        busy = [n for n, t in enumerate(self._slots) if t in pending and n in self._running]
        unfinished = [self._running[n] for n in busy]
        self.executor.stopping = True
        await cancel_and_wait(pending)
        await self.completer.close(timeout=max(grace, 5.0))
        for d in unfinished:
            await self._requeue(d)
        if self._lease is not None:
            self._lease.stop()
            self._lease.join(timeout=5)
        retired = True
        for keys in self.keys.values():
            retired &= await self.transitions.call(operations.retire(keys, self.consumer))
        if self._lease is not None:
            self._lease.unregister()
        self.executor.shutdown()
        await self._blocker.aclose()
        log.info(
            "worker %s stopped (%s)%s",
            self.consumer,
            ", ".join(f"{k} {v}" for k, v in self.counts.items()),
            "" if retired else "; it still holds pending jobs, which will be reclaimed",
        )

    async def _requeue(self, d: Delivery) -> None:
        """Give an unfinished job back to its stream now, so any worker can run it at once."""
        job_id = job_id_for(d.queue, d.level, d.entry_id)
        fields: dict[str, Any] = {k.decode(errors="replace"): v for k, v in d.fields.items()}
        fields.setdefault("id", job_id)
        new_id = await self.transitions.call(
            operations.requeue(self.keys[d.queue], self.consumer, d, text(fields["id"]), fields)
        )
        self.held.discard(d.queue, d.level, d.entry_id)
        if new_id:
            log.info("requeued unfinished job %s", text(fields["id"]))


async def run_worker(
    app: Conveyor, settings: WorkerSettings | None = None, *, handle_signals: bool = True
) -> None:
    """Run one worker in this process until SIGTERM/SIGINT."""
    await Worker(app, settings).run(handle_signals=handle_signals)


def serve(app: Conveyor, settings: WorkerSettings | None = None) -> None:
    """Run a worker as this process's main job until SIGTERM/SIGINT, then end the process.

    Python cannot stop a thread: a sync task still running after the shutdown grace (its
    job already handed back) would keep the process alive, so the process exits without
    waiting for it.
    """
    asyncio.run(Worker(app, settings).run(handle_signals=True))
    exit_if_task_threads_linger()


def exit_if_task_threads_linger() -> None:
    """End the process now if sync task threads outlived a worker's shutdown."""
    stuck = [t for t in threading.enumerate() if t.name.startswith("conveyor-task")]
    for t in stuck:
        t.join(0.5)
    if any(t.is_alive() for t in stuck):
        log.warning("exiting with sync task threads still running (their jobs were requeued)")
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
