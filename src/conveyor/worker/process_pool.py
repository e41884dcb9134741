"""A pool of worker subprocesses for CPU-bound sync tasks, with timeouts that really stop them.

A thread cannot be stopped, so a sync task in a thread outlives its timeout (threads.py). A
subprocess can be killed: here each job runs in a child started with the *spawn* context,
a timeout or a cancel kills that child with SIGKILL and a fresh one takes its place, and a
child that crashes (segfault, ``os._exit``) fails only the job it ran. The event loop only
waits on pipes, so fetching, acks and lease renewals go on while the children compute.

Nothing is pickled across the boundary: requests and replies are JSON (the wire's encoder),
errors come back as text (type, message, formatted traceback), and a result JSON cannot
carry is refused in the child as the job's final failure. A child imports the task by
``module:qualname`` (a ``conveyor.Task`` found there runs its ``.fn`` on its own typed
arguments), never starts a worker and never talks to Redis; ``current_job()`` inside it
returns the JobContext sent with the call. Children exit with their parent: they read EOF
from the pool's pipe when idle, and a watchdog thread ends them if the parent dies mid-job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from ..context import JobContext
from ..errors import ConfigurationError, ConveyorError, PayloadError, TaskTimeout
from ..wire import decode_json, encode_json
from .executor import Outcome
from .process_child import child_main

log = logging.getLogger("conveyor.worker")

#: Outcome.reason of a job whose child was killed by ``ProcessPool.cancel``.
CANCELLED = "cancelled"
#: A child that dies this many times in a row before it is ready marks the pool broken.
MAX_START_FAILURES = 3


@dataclass(frozen=True)
class ProcessPoolSettings:
    """``size`` children per worker process; ``start_timeout`` seconds for a child to start
    and to import a task's module before its job fails (a job's own ``timeout`` counts from
    the moment its function is called, so a slow import never eats it)."""

    size: int = 2
    start_timeout: float = 60.0

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 1:
            raise ConfigurationError(
                f"ProcessPoolSettings.size must be an integer >= 1, not {self.size!r}"
            )
        if not self.start_timeout > 0:
            raise ConfigurationError(
                f"ProcessPoolSettings.start_timeout must be > 0, not {self.start_timeout!r}"
            )


class PoolClosed(ConveyorError):
    """The process pool was closed while a job waited for or ran in one of its children."""


class PoolBroken(ConveyorError):
    """Children die before they are ready (or never get ready): no job can run here.

    The worker should stop (WorkerCrashed) so that its supervisor starts a fresh process,
    rather than fail every job of the task on this one.
    """


def task_ref(fn: Callable[..., Any]) -> str:
    """The ``module:qualname`` a child imports ``fn`` by (a Task's ``.fn`` gives the same)."""
    fn = getattr(fn, "__wrapped__", fn)
    qualname = fn.__qualname__
    if "<locals>" in qualname or "<lambda>" in qualname:
        raise ConfigurationError(
            f"executor='process' needs a function a subprocess can import by name; "
            f"{fn.__module__}.{qualname} is defined inside a function or is a lambda"
        )
    return f"{fn.__module__}:{qualname}"


def exit_description(exitcode: int | None) -> str:
    """How a child ended, for the job's error: "signal 11 (SIGSEGV)" or "exit code 3"."""
    if exitcode is None:
        return "an unknown status"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            return f"signal {-exitcode}"
        return f"signal {-exitcode} ({name})"
    return f"exit code {exitcode}"


class _Child:
    __slots__ = ("conn", "dead", "exitcode", "inbox", "job_id", "killed_for", "process", "ready")

    def __init__(self, process: BaseProcess, conn: Connection) -> None:
        self.process = process
        self.conn = conn
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.job_id: str | None = None
        #: why the pool killed it ("timeout", "cancel", "abandoned", "start"), if it did
        self.killed_for: str | None = None
        self.ready = False
        self.dead = False
        self.exitcode: int | None = None

    @property
    def pid(self) -> int:
        return self.process.pid or 0


class ProcessPool:
    """Runs sync task functions in spawned subprocesses, one job per child at a time.

    ``run`` waits for a free child (no timeout while waiting: size the worker's concurrency
    to the pool), sends the call, and returns its Outcome. Use it from one event loop.
    """

    def __init__(self, settings: ProcessPoolSettings | None = None) -> None:
        self.settings = settings or ProcessPoolSettings()
        self._ctx = multiprocessing.get_context("spawn")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._children: list[_Child] = []
        self._idle: asyncio.Queue[_Child | None] | None = None
        self._all_ready: asyncio.Event | None = None
        self._start_failures = 0
        self._broken: str | None = None
        self._closed = False

    @property
    def pids(self) -> list[int]:
        """Process ids of the live children (tests and the worker's registry entry)."""
        return [c.pid for c in self._children if not c.dead]

    @property
    def ready(self) -> int:
        """Children started and able to take a job (a replacement takes a moment to start)."""
        return sum(c.ready and not c.dead for c in self._children)

    async def start(self) -> None:
        """Start the children and wait until each is ready (``run`` starts them if needed)."""
        if self._closed:
            raise PoolClosed("the process pool is closed")
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._idle = asyncio.Queue()
            self._all_ready = asyncio.Event()
            for _ in range(self.settings.size):
                self._spawn()
        assert self._all_ready is not None
        try:
            await asyncio.wait_for(self._all_ready.wait(), self.settings.start_timeout)
        except asyncio.TimeoutError:
            raise PoolBroken(
                f"worker subprocesses did not start within {self.settings.start_timeout} s "
                "(ProcessPoolSettings.start_timeout)"
            ) from None
        if self._broken:
            raise PoolBroken(self._broken)

    async def run(
        self,
        fn_ref: str,
        args: list[Any],
        kwargs: dict[str, Any],
        job: JobContext,
        timeout: float | None,
    ) -> Outcome:
        """Run ``fn_ref`` (``module:qualname``) in a child; its result or failure as Outcome.

        ``timeout`` seconds after the function was called its child is killed and replaced
        (a TaskTimeout failure, retried like any failure). Cancelling this call (the worker
        stopping) kills the child too, so the job is not left running while it is handed back.
        """
        if self._loop is None:
            await self.start()
        try:
            request = encode_json(
                {"fn": fn_ref, "args": args, "kwargs": kwargs, "job": job.public()}
            )
        except PayloadError as exc:
            error = f"PayloadError: the job's arguments cannot be sent to a subprocess: {exc}"
            return Outcome(False, error=error, final=True, reason="bad_arguments")
        child = await self._send(request, job.id)
        try:
            outcome = await self._outcome(child, fn_ref, timeout)
        except BaseException:
            self._kill(child, "abandoned")
            raise
        finally:
            child.job_id = None
        if not child.dead and child.killed_for is None and not self._closed:
            assert self._idle is not None
            self._idle.put_nowait(child)
        return outcome

    def cancel(self, job_id: str) -> bool:
        """Kill the child running ``job_id``; its ``run`` returns a failure with reason
        ``"cancelled"``. False when no child runs that job (not started or already done).

        Safe to call from any thread (a lease thread that learns of the cancel from Redis).
        """
        for child in list(self._children):
            if child.job_id == job_id and not child.dead:
                self._kill(child, "cancel")
                return True
        return False

    def close(self, grace: float = 2.0) -> None:
        """Stop every child and reap it: idle ones exit on EOF, busy ones are killed.

        Cancel the ``run`` calls first (as the worker does with its slots at shutdown): a
        call still running now raises PoolClosed. Safe to call twice, and after the loop ended.
        """
        self._closed = True
        children, self._children = list(self._children), []
        for child in children:
            self._unwatch(child)
            if child.job_id is None:
                child.conn.close()  # EOF: an idle child returns from its loop
            else:
                self._kill(child, "closed")
        deadline = time.monotonic() + grace
        for child in children:
            child.process.join(max(0.0, deadline - time.monotonic()))
            if child.process.exitcode is None:
                child.process.kill()
                child.process.join()
            with contextlib.suppress(OSError):
                child.conn.close()
            if not child.dead:
                child.dead = True
                with contextlib.suppress(RuntimeError):  # the loop already ended
                    child.inbox.put_nowait({"t": "closed"})
        if self._idle is not None:
            with contextlib.suppress(RuntimeError):
                self._idle.put_nowait(None)  # wakes a run waiting for a child

    # -- children ---------------------------------------------------------------------------
    def _spawn(self) -> None:
        assert self._loop is not None
        parent_end, child_end = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(
            target=child_main, args=(child_end,), name="conveyor-process", daemon=True
        )
        process.start()
        child_end.close()  # so that the child's death reads as EOF here
        child = _Child(process, parent_end)
        self._children.append(child)
        self._loop.add_reader(parent_end.fileno(), self._readable, child)
        self._loop.add_reader(process.sentinel, self._exited, child)

    def _readable(self, child: _Child) -> None:
        try:
            message = decode_json(child.conn.recv_bytes())
        except (EOFError, OSError):
            self._unwatch_conn(child)  # the exit is reported by the sentinel
            return
        self._deliver(child, message)

    def _deliver(self, child: _Child, message: dict[str, Any]) -> None:
        if message.get("t") == "ready":
            child.ready = True
            self._start_failures = 0
            assert self._idle is not None and self._all_ready is not None
            self._idle.put_nowait(child)
            if sum(c.ready for c in self._children) >= self.settings.size:
                self._all_ready.set()
        else:
            child.inbox.put_nowait(message)

    def _exited(self, child: _Child) -> None:
        # A reply sent just before the child was killed (a cancel racing the job's end) is
        # still in the pipe: read it first, so the job ends with what it really did.
        with contextlib.suppress(EOFError, OSError):  # EOF once the pipe is drained
            while not child.conn.closed and child.conn.poll():
                self._deliver(child, decode_json(child.conn.recv_bytes()))
        self._unwatch(child)
        child.process.join(5.0)  # its fds closed as it exited: reaped at once
        child.exitcode = child.process.exitcode
        child.dead = True
        with contextlib.suppress(OSError):
            child.conn.close()
        if child in self._children:
            self._children.remove(child)
        child.inbox.put_nowait({"t": "died"})
        if self._closed:
            return
        if not child.ready:
            self._start_failures += 1
            if self._start_failures >= MAX_START_FAILURES:
                self._broken = (
                    f"worker subprocesses exit before they are ready ({self._start_failures} "
                    f"in a row, the last with {exit_description(child.exitcode)}); see the "
                    "worker's stderr for their error"
                )
                log.error("process pool: %s", self._broken)
                assert self._idle is not None and self._all_ready is not None
                self._all_ready.set()
                self._idle.put_nowait(None)
                return
        elif child.killed_for is None:
            log.warning(
                "worker subprocess %d died with %s", child.pid, exit_description(child.exitcode)
            )
        self._spawn()

    def _unwatch_conn(self, child: _Child) -> None:
        if self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(OSError, ValueError):
                self._loop.remove_reader(child.conn.fileno())

    def _unwatch(self, child: _Child) -> None:
        self._unwatch_conn(child)
        if self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(OSError, ValueError):
                self._loop.remove_reader(child.process.sentinel)

    def _kill(self, child: _Child, why: str) -> None:
        if child.dead or child.killed_for is not None:
            return
        child.killed_for = why
        with contextlib.suppress(ProcessLookupError, OSError):
            os.kill(child.pid, signal.SIGKILL)

    # -- one call ---------------------------------------------------------------------------
    async def _send(self, request: bytes, job_id: str) -> _Child:
        assert self._idle is not None
        while True:
            if self._broken:
                raise PoolBroken(self._broken)
            if self._closed:
                raise PoolClosed("the process pool is closed")
            child = await self._idle.get()
            if child is None:
                self._idle.put_nowait(None)  # let the next waiter see it too
                continue
            if child.dead or child.killed_for is not None:
                continue
            child.job_id = job_id
            try:
                child.conn.send_bytes(request)
            except OSError:  # it died while idle: its exit spawns a replacement
                child.job_id = None
                continue
            return child

    async def _outcome(self, child: _Child, fn_ref: str, timeout: float | None) -> Outcome:
        limit = self.settings.start_timeout
        message = await _next(child, limit)
        if message is None:
            self._kill(child, "start")
            await _next(child, 10.0)
            return Outcome(
                False,
                error=f"TaskTimeout: the worker subprocess did not import {fn_ref} within "
                f"{limit} s (ProcessPoolSettings.start_timeout); it was killed",
            )
        if message.get("t") == "started":
            message = await _next(child, timeout)
            if message is None:
                self._kill(child, "timeout")
                await _next(child, 10.0)
                exc = TaskTimeout(
                    f"{fn_ref} ran longer than its timeout of {timeout} s; "
                    "its worker subprocess was killed"
                )
                return Outcome(False, error=f"{type(exc).__name__}: {exc}")
        return self._read(child, message)

    def _read(self, child: _Child, message: dict[str, Any]) -> Outcome:
        kind = message.get("t")
        if kind == "ok":
            return Outcome(True, message.get("v"))
        if kind == "err":
            return Outcome(
                False,
                error=message.get("error"),
                traceback=message.get("traceback"),
                final=bool(message.get("final")),
                reason=message.get("reason"),
            )
        if kind == "closed":
            raise PoolClosed("the process pool was closed while the job ran")
        if child.killed_for == "cancel":
            return Outcome(
                False,
                error="cancelled: the job was cancelled while running; "
                "its worker subprocess was killed",
                final=True,
                reason=CANCELLED,
            )
        return Outcome(
            False,
            error=f"worker subprocess died with {exit_description(child.exitcode)} "
            "while running the job",
        )


async def _next(child: _Child, timeout: float | None) -> dict[str, Any] | None:
    """The child's next message; None when ``timeout`` passes first."""
    if timeout is None:
        return await child.inbox.get()
    try:
        return await asyncio.wait_for(child.inbox.get(), timeout)
    except asyncio.TimeoutError:
        return None


# -- inside the child -----------------------------------------------------------------------
