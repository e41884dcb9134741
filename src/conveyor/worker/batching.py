"""Micro-batches: the jobs of a task with ``batch_size`` run together, one call per batch.

Each job still holds its own slot, lease and delivery: its slot hands its item to the batcher
and waits for its own outcome, then ends its job as a plain job ends (a success acked through
the completer, a failure retried or dead-lettered alone, a cancel ended cancelled). So a
crash re-runs only the jobs whose acks were not stored, nothing is acked for a whole batch
at once, and shutdown hands back waiting jobs like any running ones.

A batch is filled from the jobs this worker's slots hold: it is called when it has
``batch_size`` items, or ``batch_wait`` seconds after its first, whichever comes first. A
worker with fewer slots than ``batch_size`` never fills one (it says so once at the first
batch): run it with ``concurrency`` at least ``batch_size``.

The contract with the function: it takes one list, the items (each job's one argument,
converted to the list's annotated item type), and returns a list of as many results, in the
same order; an item's result may be an exception instance, which fails that job alone. An
exception raised by the function fails every job of the batch (each is retried on its own
schedule and may land in another batch). ``current_job()`` is not set inside a batch: it
runs for several jobs. A job cancelled while its batch fills leaves it (an async task's
slot is cancelled; a sync task's mark is read when the batch is called) and ends cancelled.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import traceback
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from ..context import JobContext
from ..errors import PayloadError, TaskTimeout
from ..task import Task
from .executor import Executor, Outcome, cancelled_outcome, task_cancelled

log = logging.getLogger("conveyor.worker")

#: Container types whose item type a batch function's parameter annotation gives.
_LISTS = (list, Sequence, typing.Sequence, tuple)


@dataclass
class _Open:
    """A batch being filled: (item, the waiting slot's future, its job) per job."""

    task: Task[Any, Any]
    timer: asyncio.TimerHandle | None = None
    items: list[tuple[Any, asyncio.Future[Outcome], JobContext]] = field(default_factory=list)


class Batcher:
    def __init__(self, executor: Executor, slots: int) -> None:
        self.executor = executor
        self.slots = slots
        self._open: dict[str, _Open] = {}
        self._item_types: dict[str, Any] = {}
        self._running: set[asyncio.Task[None]] = set()
        self._warned: set[str] = set()
        #: per task name: [batches called, items in them] (the mean batch size is the ratio)
        self.stats: dict[str, list[int]] = {}

    # -- per job --------------------------------------------------------------------------------
    def bind(
        self, task: Task[Any, Any], args: Sequence[Any], kwargs: dict[str, Any]
    ) -> tuple[list[Any], dict[str, Any]]:
        """A batched job carries one argument, its item: checked and converted here (a
        job with other arguments is dead-lettered as ``bad_arguments`` before it waits)."""
        if kwargs or len(args) != 1:
            raise PayloadError(
                f"{task.name} is a batch task (batch_size={task.options.batch_size}): each job "
                f"takes exactly one positional argument, its item, not {len(args)} positional "
                f"and {len(kwargs)} keyword argument(s)"
            )
        hint = self._item_type(task)
        value = args[0]
        if hint is not None:
            try:
                value = msgspec.convert(value, hint, strict=False)
            except (msgspec.ValidationError, TypeError) as exc:
                raise PayloadError(f"the item of batch task {task.name}: {exc}") from exc
        return [value], {}

    async def run(self, task: Task[Any, Any], item: Any, job: JobContext) -> Outcome:
        """Add the job's item to its task's open batch and wait for this item's outcome."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outcome] = loop.create_future()
        size = task.options.batch_size or 1
        pending = self._open.get(task.name)
        if pending is None:
            self._warn_small(task, size)
            pending = self._open[task.name] = _Open(task)
            pending.timer = loop.call_later(task.options.batch_wait, self._flush, task.name)
        pending.items.append((item, future, job))
        if len(pending.items) >= size:
            self._flush(task.name)
        try:
            return await future
        except asyncio.CancelledError:
            # Only the slot is ever cancelled here (the batch never cancels a future): by
            # job.cancel() (the job ends cancelled; the batch runs on for the others), or
            # by the worker stopping (the job is handed back). Either way its item leaves a
            # batch still filling, so it does not take the place of a job that will run.
            self._withdraw(task.name, future)
            if job.cancelled() and not self.executor.stopping:
                uncancel = getattr(asyncio.current_task(), "uncancel", None)
                if uncancel is not None:
                    uncancel()
                return cancelled_outcome()
            raise

    def _withdraw(self, name: str, future: asyncio.Future[Outcome]) -> None:
        pending = self._open.get(name)
        if pending is None:
            return
        pending.items = [i for i in pending.items if i[1] is not future]
        if not pending.items:
            del self._open[name]
            if pending.timer is not None:
                pending.timer.cancel()

    # -- per batch ------------------------------------------------------------------------------
    def _flush(self, name: str) -> None:
        pending = self._open.pop(name, None)
        if pending is None:
            return
        if pending.timer is not None:
            pending.timer.cancel()
        live = []
        for item in pending.items:
            if item[1].done():
                continue
            if item[2].cancelled():
                # A sync task's job is cancelled by a mark, not by cancelling its slot: one
                # marked while its batch filled ends cancelled here, without being called.
                item[1].set_result(cancelled_outcome())
                continue
            live.append(item)
        if not live:
            return
        stats = self.stats.setdefault(name, [0, 0])
        stats[0] += 1
        stats[1] += len(live)
        running = asyncio.create_task(self._call(pending.task, live), name=f"batch-{name}")
        self._running.add(running)
        running.add_done_callback(self._running.discard)

    async def _call(
        self, task: Task[Any, Any], items: list[tuple[Any, asyncio.Future[Outcome], JobContext]]
    ) -> None:
        try:
            outcome = await self._invoke(task, [i[0] for i in items])
            results = split(task.name, outcome, len(items))
        except asyncio.CancelledError:  # this batch task is stopped (_invoke tells)
            for _, future, _ in items:
                if not future.done():
                    future.cancel()
            raise
        except BaseException as exc:
            # A failure here is each item's, set as its outcome: a slot's future is never
            # cancelled for it (a slot that sees a CancelledError ends, and the worker too).
            log.exception("batch of task %s failed outside its function", task.name)
            results = [_failure(exc)] * len(items)
        for (_, future, job), result in zip(items, results, strict=True):
            job._returned()  # a cancel mark read from now on is too late for this run
            if not future.done():
                future.set_result(result)

    async def _invoke(self, task: Task[Any, Any], values: list[Any]) -> Outcome:
        timeout = task.options.timeout
        try:
            if task.is_async:
                run = _call_async(task.fn, values)
                return await (run if timeout is None else asyncio.wait_for(run, timeout))
            call = functools.partial(_call_sync, task.fn, values)
            label = f"{task.name} (batch of {len(values)})"
            return await self.executor.threads.run(call, timeout, label)
        except asyncio.TimeoutError:
            exc = TaskTimeout(f"batch task {task.name} ran longer than its timeout of {timeout} s")
            return Outcome(False, error=f"{type(exc).__name__}: {exc}")
        except asyncio.CancelledError as exc:
            # One the function raised itself (it awaited something another task cancelled)
            # fails the batch, as it fails a plain async task (Executor.run); one aimed at
            # this batch task passes through.
            if task_cancelled():
                raise
            return _failure(exc)

    def _item_type(self, task: Task[Any, Any]) -> Any:
        if task.name not in self._item_types:
            self._item_types[task.name] = item_type(task.fn)
        return self._item_types[task.name]

    def _warn_small(self, task: Task[Any, Any], size: int) -> None:
        if self.slots < size and task.name not in self._warned:
            self._warned.add(task.name)
            log.warning(
                "task %s has batch_size=%d, but this worker runs %d slots: its batches hold at "
                "most %d jobs; run the worker with concurrency >= %d",
                task.name,
                size,
                self.slots,
                self.slots,
                size,
            )


def split(name: str, outcome: Outcome, n: int) -> list[Outcome]:
    """One outcome per item of a batch from the outcome of its call (pure)."""
    if not outcome.ok:
        return [outcome] * n
    results = outcome.value
    if not isinstance(results, list | tuple):
        error = (
            f"ValueError: batch task {name} must return a list with one result (or "
            f"exception) per item, not {type(results).__name__}"
        )
        return [Outcome(False, error=error)] * n
    if len(results) != n:
        error = (
            f"ValueError: batch task {name} returned {len(results)} results for {n} items; "
            "return one result (or exception) per item, in order"
        )
        return [Outcome(False, error=error)] * n
    return [_item_outcome(r) for r in results]


def _item_outcome(result: Any) -> Outcome:
    if isinstance(result, BaseException):
        text = "".join(traceback.format_exception(type(result), result, result.__traceback__))
        return Outcome(False, error=f"{type(result).__name__}: {result}", traceback=text)
    return Outcome(True, result)


def item_type(fn: Callable[..., Any]) -> Any:
    """The item type of a batch function's one parameter (``list[str]`` -> str), or None."""
    params = list(inspect.signature(fn).parameters.values())
    if not params:
        return None
    try:
        hint = typing.get_type_hints(fn).get(params[0].name)
    except Exception:  # an annotation not resolvable here: no conversion
        return None
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in _LISTS and args and args[0] is not Any:
        return args[0]
    return None


def _failure(exc: BaseException) -> Outcome:
    tb = exc.__traceback__.tb_next if exc.__traceback__ else None
    text = "".join(traceback.format_exception(type(exc), exc, tb))
    return Outcome(False, error=f"{type(exc).__name__}: {exc}", traceback=text)


def _call_sync(fn: Callable[..., Any], values: list[Any]) -> Outcome:
    try:
        return Outcome(True, fn(values))
    except BaseException as exc:
        return _failure(exc)


async def _call_async(fn: Callable[..., Any], values: list[Any]) -> Outcome:
    try:
        return Outcome(True, await fn(values))
    except asyncio.CancelledError:
        raise
    except BaseException as exc:
        return _failure(exc)
