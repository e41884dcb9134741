"""Runs P worker processes, restarts any that dies, and passes shutdown signals on.

Each child is a fresh interpreter (spawn) that imports the app itself, so nothing unpicklable
crosses the process boundary and a crash in one child never takes the others down.

How a child ends decides what follows: a crash (any other status) is restarted after a
backoff that grows with repeated crashes; RECYCLE_EXIT (it reached ``max_jobs`` or
``max_memory_mb``) is restarted at once and is not a crash; 0 in burst mode means its queues
are drained, and the supervisor exits 0 once every child has. With ``reload`` a change to a
``.py`` file under the current directory restarts every child (graceful stop, then fresh
imports).
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.process
import os
import signal
import time
from dataclasses import dataclass, field
from types import FrameType

from ..settings import WorkerSettings
from .lifetime import RECYCLE_EXIT
from .reload import FileWatcher

log = logging.getLogger("conveyor.supervisor")

RESTART_CAP = 30.0


def _child(
    spec: str,
    settings: WorkerSettings,
    url: str | None,
    namespace: str | None,
    log_level: str,
    log_format: str,
) -> None:
    from ..logs import configure_logging
    from .loader import load_app
    from .runtime import serve

    configure_logging(log_level, log_format)
    app = load_app(spec)
    app.rebind(url=url, namespace=namespace)
    serve(app, settings)


@dataclass
class Slot:
    index: int
    process: multiprocessing.process.BaseProcess | None = None
    crashes: int = 0
    restart_at: float = 0.0
    started_at: float = field(default_factory=time.monotonic)
    #: a burst child that drained its queues: not restarted
    finished: bool = False


class Supervisor:
    def __init__(
        self,
        spec: str,
        settings: WorkerSettings,
        processes: int,
        *,
        url: str | None = None,
        namespace: str | None = None,
        log_level: str = "INFO",
        log_format: str = "text",
        reload: bool = False,
    ) -> None:
        self.spec = spec
        self.settings = settings
        self.slots = [Slot(i) for i in range(processes)]
        self.url = url
        self.namespace = namespace
        self.log_level = log_level
        self.log_format = log_format
        self.watcher = FileWatcher([os.getcwd()]) if reload else None
        self._ctx = multiprocessing.get_context("spawn")
        self._stopping = False

    def _spawn(self, slot: Slot) -> None:
        p = self._ctx.Process(
            target=_child,
            args=(
                self.spec,
                self.settings,
                self.url,
                self.namespace,
                self.log_level,
                self.log_format,
            ),
            name=f"conveyor-worker-{slot.index}",
        )
        p.start()
        slot.process = p
        slot.started_at = time.monotonic()
        log.info("started worker process %d (pid %s)", slot.index, p.pid)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if not self._stopping:
            log.info("received %s: stopping workers", signal.Signals(signum).name)
        self._stopping = True

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        for slot in self.slots:
            self._spawn(slot)
        while not self._stopping:
            self._check()
            if all(slot.finished for slot in self.slots):
                log.info("every worker process drained its queues (burst): exiting")
                return 0
            changed = self.watcher.changed() if self.watcher is not None else None
            if changed is not None:
                log.info("%s changed: restarting the worker processes", changed)
                self._stop_all()
                for slot in self.slots:
                    slot.crashes, slot.finished, slot.restart_at = 0, False, 0.0
                    self._spawn(slot)
            time.sleep(0.2)
        return self._stop_all()

    def _check(self) -> None:
        now = time.monotonic()
        for slot in self.slots:
            p = slot.process
            if p is not None and p.is_alive():
                if now - slot.started_at > 60:
                    slot.crashes = 0
                continue
            if p is not None:
                code = p.exitcode
                p.join(0)
                slot.process = None
                if code == 0 and self.settings.burst:
                    slot.finished = True
                    log.info("worker process %d (pid %s) drained its queues", slot.index, p.pid)
                elif code == RECYCLE_EXIT:
                    slot.restart_at = now
                    log.info(
                        "worker process %d (pid %s) reached its job or memory limit; "
                        "starting a fresh one",
                        slot.index,
                        p.pid,
                    )
                else:
                    slot.crashes += 1
                    delay = min(RESTART_CAP, 0.5 * 2 ** (slot.crashes - 1))
                    slot.restart_at = now + delay
                    log.warning(
                        "worker process %d (pid %s) exited with %s; restarting in %.1fs",
                        slot.index,
                        p.pid,
                        code,
                        delay,
                    )
            if slot.process is None and not slot.finished and now >= slot.restart_at:
                self._spawn(slot)

    def _stop_all(self) -> int:
        alive = [s.process for s in self.slots if s.process is not None and s.process.is_alive()]
        for p in alive:
            p.terminate()  # SIGTERM: each worker finishes its jobs within its grace period
        deadline = time.monotonic() + self.settings.shutdown_grace + 10
        for p in alive:
            p.join(max(0.0, deadline - time.monotonic()))
        stuck = [p for p in alive if p.is_alive()]
        for p in stuck:
            log.error("worker process pid %s did not stop in time; killing it", p.pid)
            p.kill()
            p.join(5)
        for slot in self.slots:
            slot.process = None
        return 1 if stuck else 0
