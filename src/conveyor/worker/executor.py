"""Runs one job's function: a coroutine on the loop, a sync function on a task thread.

A sync task never blocks the event loop, so fetching, acking and heartbeats keep going while
it runs. Timeouts stop waiting for a thread (Python cannot kill one); its late outcome is
discarded, since the job was already retried or dead-lettered (see threads.py).

Whatever a task raises, ``SystemExit``, ``KeyboardInterrupt`` and other BaseExceptions
included, is that job's failure: a task cannot end its slot or the worker process. Only a
cancellation of the slot itself (the worker stopping) passes through.

Generator tasks stream: each chunk a sync generator (in its thread) or an async generator (on
the loop) yields is emitted to the job's chunk stream before the next is asked for, and the
run's end is marked when it stops. A sync generator's ``return`` value is the job's result;
an async generator's is None (Python gives it no return value). A run that times out, or is
handed back at shutdown, is abandoned (streams.abandon_run): a thread that still runs it
writes nothing more, and a generator there is closed at its next chunk, so the job's next
run streams alone. Plain tasks pay one list read for this (did the run emit?), nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import traceback
from collections.abc import Callable, Coroutine, Generator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..context import JobContext, _current
from ..errors import TaskTimeout
from ..streams import abandon_run
from ..task import Task
from .threads import TaskThreads

if TYPE_CHECKING:
    from .process_pool import ProcessPool


#: Not frozen: a frozen dataclass's __init__ sets each field through object.__setattr__,
#: about 4x the cost of a plain one, and this is built once per job on the hot path.
@dataclass(slots=True)
class Outcome:
    ok: bool
    value: Any = None
    error: str | None = None
    traceback: str | None = None
    #: a failure that can never succeed (a result JSON cannot carry): dead at once, no retry
    final: bool = False
    #: the dead-letter reason when not the usual "failed"
    reason: str | None = None


#: The outcome reason of a job stopped by job.cancel(): it ends ``cancelled``, not retried.
CANCELLED = "cancelled"


def cancelled_outcome() -> Outcome:
    return Outcome(False, error="cancelled while running", final=True, reason=CANCELLED)


#: Makes the context manager entered around one run (the app's ``around_task`` hooks).
Around = Callable[[JobContext], AbstractContextManager[object]]
#: What a task's function is, beyond async (Task.is_async): asked once per task name.
PLAIN, GENERATOR, ASYNC_GENERATOR = 0, 1, 2


def kind_of(fn: Callable[..., Any]) -> int:
    if inspect.isasyncgenfunction(fn):
        return ASYNC_GENERATOR
    return GENERATOR if inspect.isgeneratorfunction(fn) else PLAIN


class Executor:
    def __init__(
        self,
        threads: TaskThreads[Outcome],
        pool: ProcessPool | None = None,
        around: Sequence[Around] = (),
    ) -> None:
        self.threads = threads
        #: entered around each thread or async run, where the function runs
        self.around = tuple(around)
        #: task name -> PLAIN, GENERATOR or ASYNC_GENERATOR, for sync-looking functions
        self._kinds: dict[str, int] = {}
        #: subprocesses for tasks with ``executor="process"``; None when no task asks
        self.pool = pool
        self._refs: dict[str, str] = {}
        #: set by the worker before it cancels jobs still running at shutdown; until then a
        #: CancelledError out of a task is the task's own failure, not the worker's stop
        self.stopping = False

    async def run(
        self, task: Task[Any, Any], args: list[Any], kwargs: dict[str, Any], job: JobContext
    ) -> Outcome:
        timeout = task.options.timeout
        try:
            if self.pool is not None and task.options.executor == "process":
                ref = self._refs.get(task.name)
                if ref is None:
                    from .process_pool import task_ref  # it imports this module

                    ref = self._refs[task.name] = task_ref(task.fn)
                return await self.pool.run(ref, args, kwargs, job, timeout)
            kind = PLAIN
            if not task.is_async:
                kind = self._kinds.get(task.name, -1)
                if kind < 0:
                    kind = self._kinds[task.name] = kind_of(task.fn)
            if task.is_async or kind == ASYNC_GENERATOR:
                runner = _run_async if kind == PLAIN else _run_async_generator
                run = runner(task.fn, args, kwargs, job, self.around)
                if timeout is None:
                    return await OwnContext(run)
                return await asyncio.wait_for(run, timeout)  # a task, with a context copy
            runner_sync = _run_sync if kind == PLAIN else _run_generator
            call = functools.partial(runner_sync, task.fn, args, kwargs, job, self.around)
            return await self.threads.run(call, timeout, f"{task.name} ({job.id})")
        except asyncio.TimeoutError:
            # A thread runs on, a coroutine was stopped mid-way: either way its run is over
            # (what a thread emits from now on is dropped) and readers are told at once.
            if job._writer is not None:
                await job._writer.abandon(job)
            else:
                abandon_run(job)
            exc = TaskTimeout(f"task {task.name} ran longer than its timeout of {timeout} s")
            return Outcome(False, error=_describe(exc))
        except asyncio.CancelledError as exc:
            if job.cancelled() and not self.stopping:
                # job.cancel() reached it (flow.py cancelled the slot): the job's own end
                uncancel = getattr(asyncio.current_task(), "uncancel", None)
                if uncancel is not None:  # Python 3.11+
                    uncancel()
                if job._flags[2] and job._writer is not None:  # readers look at once
                    await job._writer.abandon(job)
                return cancelled_outcome()
            if self.stopping or task_cancelled():
                # The job is handed back and runs again: a thread still running it must
                # not stream into the next run (no end marker: the worker is stopping).
                abandon_run(job)
                raise
            if job._flags[2] and job._writer is not None:  # it emitted, then failed so
                await job._writer.abandon(job)
            return _failure(exc)  # e.g. it awaited something another task cancelled

    def shutdown(self) -> None:
        self.threads.shutdown()
        if self.pool is not None:
            self.pool.close()


def task_cancelled() -> bool:
    """True when the asyncio task running the job (its slot) was asked to stop.

    A CancelledError the job raised or caught from something it awaited is its failure; one
    aimed at the slot (the worker stopping, asyncio.run cleaning up after a crash) must end
    the slot, so that its job is handed back instead of dead-lettered as a failure.
    """
    current = asyncio.current_task()
    cancelling = getattr(current, "cancelling", None)  # Python 3.11+
    return bool(cancelling is not None and cancelling() > 0)


class OwnContext:
    """Awaits a coroutine with each of its steps run in a copy of the current context.

    Slots run job after job in one asyncio task; this gives every job the context a task of
    its own would have, so a ContextVar one job sets (a trace span, a tenant id) is not seen
    by the next. Cancellation and errors thrown into the waiting job reach it as in a task.
    """

    __slots__ = ("_context", "_coro")

    def __init__(self, coro: Coroutine[Any, Any, Outcome]) -> None:
        self._coro = coro
        self._context = contextvars.copy_context()

    def __await__(self) -> Generator[Any, Any, Outcome]:
        coro, run = self._coro, self._context.run
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                waiting = run(coro.send, value) if error is None else run(coro.throw, error)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            try:
                value, error = (yield waiting), None
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:
                value, error = None, exc


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _failure(exc: BaseException) -> Outcome:
    # Drop our own wrapper frame so the traceback starts in the user's code.
    tb = exc.__traceback__.tb_next if exc.__traceback__ else None
    text = "".join(traceback.format_exception(type(exc), exc, tb))
    return Outcome(False, error=_describe(exc), traceback=text)


def _entered(around: tuple[Around, ...], job: JobContext) -> contextlib.ExitStack:
    """The ``around_task`` context managers of a run, entered in order."""
    stack = contextlib.ExitStack()
    with stack:  # one that fails to enter exits those entered before it
        for factory in around:
            stack.enter_context(factory(job))
        return stack.pop_all()


def _run_sync(
    fn: Callable[..., Any],
    args: list[Any],
    kwargs: dict[str, Any],
    job: JobContext,
    around: tuple[Around, ...] = (),
) -> Outcome:
    token = _current.set(job)  # pool threads are reused: reset after the call
    ok = False
    try:
        if around:
            with _entered(around, job):
                outcome = Outcome(True, fn(*args, **kwargs))
        else:
            outcome = Outcome(True, fn(*args, **kwargs))
        ok = True
        return outcome
    except BaseException as exc:  # SystemExit included: a task's failure is data, not a crash
        return _failure(exc)
    finally:
        job._returned()  # a cancel mark read from now on is too late for this run
        _current.reset(token)
        if job._flags[2] and job._writer is not None:  # it called emit(): mark the run's end
            job._writer.end(job, ok)


def _run_generator(
    fn: Callable[..., Any],
    args: list[Any],
    kwargs: dict[str, Any],
    job: JobContext,
    around: tuple[Around, ...] = (),
) -> Outcome:
    """A sync generator task, in its thread: each chunk is stored before the next is asked
    for; a cancel mark stops it between chunks; its ``return`` value is the result. The
    ``around_task`` hooks wrap the whole iteration."""
    token = _current.set(job)
    writer = job._writer
    ok = False
    try:
        if writer is None:
            raise RuntimeError("a generator task needs a worker's chunk writer")
        with _entered(around, job) if around else contextlib.nullcontext():
            gen = fn(*args, **kwargs)
            try:
                while not job.cancelled():
                    if not writer.emit(job, next(gen)):
                        # Its run was abandoned (a timeout, a shutdown): the job ran on
                        # elsewhere, this outcome is discarded; stop asking for chunks.
                        return Outcome(False, error="RuntimeError: its run was abandoned")
            except StopIteration as stop:
                ok = True
                return Outcome(True, stop.value)
            finally:
                gen.close()
        return cancelled_outcome()
    except BaseException as exc:
        return _failure(exc)
    finally:
        job._returned()
        _current.reset(token)
        if writer is not None:
            writer.end(job, ok)


async def _run_async(
    fn: Callable[..., Any],
    args: list[Any],
    kwargs: dict[str, Any],
    job: JobContext,
    around: tuple[Around, ...] = (),
) -> Outcome:
    _current.set(job)  # in the job's own context (OwnContext, or wait_for's task)
    try:
        if around:
            with _entered(around, job):
                outcome = Outcome(True, await fn(*args, **kwargs))
        else:
            outcome = Outcome(True, await fn(*args, **kwargs))
    except asyncio.CancelledError:
        raise  # Executor.run tells the job's own cancellation from the slot's
    except BaseException as exc:  # KeyboardInterrupt, SystemExit, GeneratorExit included
        outcome = _failure(exc)
    if job._flags[2] and job._writer is not None:  # it called emit_async(): mark the end
        await job._writer.aend(job, outcome.ok)
    return outcome


async def _run_async_generator(
    fn: Callable[..., Any],
    args: list[Any],
    kwargs: dict[str, Any],
    job: JobContext,
    around: tuple[Around, ...] = (),
) -> Outcome:
    """An async generator task, on the loop: each chunk is stored before the next is asked
    for; its result is None (an async generator returns no value). Task.is_async is False
    for it, so the worker treats it as it treats a thread job: a cancel mark is seen between
    two chunks (the generator is closed there), not by cancelling the slot."""
    _current.set(job)
    writer = job._writer
    if writer is None:
        return Outcome(False, error="RuntimeError: a generator task needs a chunk writer")
    try:
        with _entered(around, job) if around else contextlib.nullcontext():
            gen = fn(*args, **kwargs)
            try:
                async for chunk in gen:
                    await writer.aemit(job, chunk)
                    if job.cancelled():
                        break
            finally:
                await gen.aclose()
        outcome = cancelled_outcome() if job.cancelled() else Outcome(True, None)
    except asyncio.CancelledError:
        raise
    except BaseException as exc:
        outcome = _failure(exc)
    finally:
        job._returned()  # as for a thread job: a cancel mark read from now on is too late
    await writer.aend(job, outcome.ok)
    return outcome
