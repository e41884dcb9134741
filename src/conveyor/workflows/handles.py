"""Handles on running workflows: returned at once by ``enqueue()``, read Redis when asked.

Every job of a workflow has an id fixed when it was built, so a handle can name the last
step before the first one ran, and say where the workflow stands: the state of its latest
step that exists (a step exists from the moment the one before it ended).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ..broker import Call, command
from ..cancellation import (
    CancelOutcome,
    CancelResult,
    cancel_call,
    cancel_flags,
    result_of,
    tell_ended,
    tell_ended_async,
)
from ..errors import JobNotFound, JobTimeout
from ..job import CANCEL_RECORD_TTL_MS, Job, JobHost, JobInfo, JobState, interpret
from ..keys import QueueKeys
from .flow import OnError

R = TypeVar("R")

#: Longest wait on one job before the workflow's state is read again.
RECHECK_SECONDS = 2.0
#: Members read per look while a chord's members run.
PEEK = 50
#: Pause when the next job to wait on does not exist yet (being added).
GAP_SECONDS = 0.05
#: Pause between reads of all of a chord's members once all ended with no callback yet.
RECHECK_MEMBERS = 0.5
#: The reason in a chord callback's record when a member failed for good (on_error="fail").
MEMBER_FAILED = "chord_member_failed"
_ENDED_BADLY = (JobState.DEAD, JobState.CANCELLED, JobState.EXPIRED)


@dataclass(frozen=True)
class WorkflowInfo:
    """Where a workflow stands: ``state`` of its step ``step`` (0-based; a chord's members
    are step 0 and its callback step 1), whose job is ``job`` (None when it is not added
    yet)."""

    state: JobState
    step: int
    job: JobInfo | None


class ChainHandle(Generic[R]):
    """A chain (or a chord's callback chain): ``result()`` is the last step's result."""

    def __init__(self, app: JobHost, workflow_id: str, steps: list[Job[Any]]) -> None:
        self.app = app
        self.id = workflow_id
        #: one handle per step, in order, each with its deterministic id
        self.jobs = steps
        self._first = 0  # the workflow step number of jobs[0]
        for job in steps:  # a reader of a step's stream waits for it while steps run before
            job._workflow = self

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.id!r}, steps={len(self.jobs)})"

    @property
    def last(self) -> Job[Any]:
        return self.jobs[-1]

    def _calls(self) -> list[Any]:
        return [j._status_call() for j in self._watched()]

    def _watched(self) -> list[Job[Any]]:
        return self.jobs

    def info(self) -> WorkflowInfo:
        replies = self.app.broker.call_many(self._calls())
        return self._interpret(replies)

    async def info_async(self) -> WorkflowInfo:
        replies = await self.app.broker.acall_many(self._calls())
        return self._interpret(replies)

    def status(self) -> JobState:
        return self.info().state

    async def status_async(self) -> JobState:
        return (await self.info_async()).state

    def _interpret(self, replies: list[Any]) -> WorkflowInfo:
        infos = [interpret(j.id, w) for j, w in zip(self._watched(), replies, strict=True)]
        return self._where(infos)

    def _where(self, infos: list[JobInfo]) -> WorkflowInfo:
        steps = infos[-len(self.jobs) :]
        for i in range(len(steps) - 1, -1, -1):
            info = steps[i]
            if info.state is JobState.UNKNOWN:
                continue
            if info.state is JobState.DONE and i < len(steps) - 1:
                # The next step is added with this one's end; its record is not there yet.
                return WorkflowInfo(JobState.QUEUED, self._first + i + 1, None)
            return WorkflowInfo(info.state, self._first + i, info)
        return WorkflowInfo(JobState.UNKNOWN, self._first, None)

    def _job_at(self, step: int) -> Job[Any]:
        return self.jobs[step - self._first]

    def _settled(self, info: WorkflowInfo) -> tuple[bool, Any]:
        """(True, result) when the workflow ended well; raises when it ended badly."""
        if info.job is not None and (info.state in _ENDED_BADLY):
            self._job_at(info.step)._outcome(info.job)  # raises JobFailed, JobCancelled...
        if info.state is JobState.UNKNOWN:
            raise JobNotFound(f"no job of workflow {self.id} in Redis (never enqueued, or expired)")
        if info.state is JobState.DONE and info.step == self._first + len(self.jobs) - 1:
            assert info.job is not None
            return True, self.last._outcome(info.job)
        return False, None

    def _active(self, info: WorkflowInfo) -> Job[Any] | None:
        return self._job_at(info.step) if info.job is not None else None

    def _look(self) -> tuple[WorkflowInfo, Job[Any] | None]:
        """Where the workflow stands, and the job to wait on next (None: none yet)."""
        info = self.info()
        return info, self._active(info)

    async def _alook(self) -> tuple[WorkflowInfo, Job[Any] | None]:
        info = await self.info_async()
        return info, self._active(info)

    def result(self, timeout: float | None = None) -> R:
        """Wait for the last step and return its result. A step that failed for good (or was
        cancelled) ends the wait with its JobFailed (JobCancelled...), naming that step's
        job; replaying it from the dead letters resumes the workflow."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            info, job = self._look()
            done, value = self._settled(info)
            if done:
                return value  # type: ignore[no-any-return]
            wait = self._left(deadline, timeout)
            if job is None:
                time.sleep(min(wait, GAP_SECONDS))
                continue
            with contextlib.suppress(Exception):  # the next look says what it meant
                job.result(timeout=min(wait, RECHECK_SECONDS))

    async def result_async(self, timeout: float | None = None) -> R:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            info, job = await self._alook()
            done, value = self._settled(info)
            if done:
                return value  # type: ignore[no-any-return]
            wait = self._left(deadline, timeout)
            if job is None:
                await asyncio.sleep(min(wait, GAP_SECONDS))
                continue
            with contextlib.suppress(Exception):  # the next look says what it meant
                await job.result_async(timeout=min(wait, RECHECK_SECONDS))

    def cancel(self, reason: str | None = None) -> list[CancelResult]:
        """Cancel every job of the workflow that has not ended, one result per job (in
        ``_watched`` order: a chord's members, then its callback and the steps after it).

        Each is cancelled as ``job.cancel()`` would (a running one is marked, its worker
        stops it within a lease beat); a step not added yet is recorded ``cancelled`` now,
        and the step before it, when it ends, adds nothing. So nothing after the cancel
        starts, whatever was running then; result() raises JobCancelled. A step that had
        ended (done, dead) stays as it was (ALREADY_ENDED). One round trip."""
        replies = self.app.broker.call_many(self._cancel_calls(reason))
        results = self._cancelled(replies)
        tell_ended(self.app, [j.id for j in self._watched()], results, reason)
        return results

    async def cancel_async(self, reason: str | None = None) -> list[CancelResult]:
        replies = await self.app.broker.acall_many(self._cancel_calls(reason))
        results = self._cancelled(replies)
        await tell_ended_async(self.app, [j.id for j in self._watched()], results, reason)
        return results

    def _cancel_calls(self, reason: str | None) -> list[Call[Any]]:
        publish = self.app.broker.publish_command
        return [
            cancel_call(
                j._keys,
                j.id,
                ttl_ms=CANCEL_RECORD_TTL_MS,
                reason=reason,
                publish=publish,
                before_added=True,
            )
            for j in self._watched()
        ]

    def _cancelled(self, replies: list[Any]) -> list[CancelResult]:
        out = []
        for job, reply in zip(self._watched(), replies, strict=True):
            try:
                out.append(result_of(job.id, reply))
            except JobNotFound:  # a record that names no place: nothing left to stop
                out.append(CancelResult(CancelOutcome.ALREADY_ENDED, "unknown"))
        return out

    def _left(self, deadline: float | None, timeout: float | None) -> float:
        if deadline is None:
            return RECHECK_SECONDS
        left = deadline - time.monotonic()
        if left <= 0:
            raise JobTimeout(f"workflow {self.id} did not finish within {timeout} s")
        return left

    # -- asked by the stream reader of a step not in Redis yet (job.StepOf) ------------------
    def _step_may_come(self, job: Job[Any]) -> bool:
        info, _ = self._look()
        return self._to_come(job, info)

    async def _step_may_come_async(self, job: Job[Any]) -> bool:
        info, _ = await self._alook()
        return self._to_come(job, info)

    def _to_come(self, job: Job[Any], info: WorkflowInfo) -> bool:
        """Whether ``job`` will be added: a step before it still runs (or the one before it
        ended well, and it is being added). Raises what ``result()`` raises when the
        workflow stopped before it (a replay of the failed step resumes it: read again)."""
        done, _ = self._settled(info)
        return not done and info.step <= self._first + self.jobs.index(job)

    async def _end_async(self) -> dict[str, Any]:
        info = await self.info_async()
        end: dict[str, Any] = {"id": self.id, "state": info.state.value, "step": info.step}
        if info.job is not None and info.job.record is not None and info.job.record.error:
            end["error"] = info.job.record.error
        return end


class ChordHandle(ChainHandle[R]):
    """A chord: its members (step 0), then its callback and the steps after it."""

    def __init__(
        self,
        app: JobHost,
        workflow_id: str,
        steps: list[Job[Any]],
        members: list[Job[Any]],
        on_error: OnError = "fail",
    ) -> None:
        super().__init__(app, workflow_id, steps)
        self.members = members
        self.on_error = on_error
        self._first = 1
        #: members not yet seen ended, in order (what result() waits on, one at a time)
        self._pending = list(members)
        #: when every member may be read again, all ended and no callback yet
        self._recheck_at = 0.0

    @property
    def callback(self) -> Job[Any]:
        return self.jobs[0]

    def _watched(self) -> list[Job[Any]]:
        return [*self.members, *self.jobs]

    def _where(self, infos: list[JobInfo]) -> WorkflowInfo:
        members = infos[: len(self.members)]
        after = self._tail(infos[len(self.members) :], members)
        if after is not None:
            return after
        if all(m.state.finished for m in members):
            return WorkflowInfo(JobState.QUEUED, 1, None)  # the callback is being added
        pending = [m for m in members if not m.state.finished]
        running = [m for m in pending if m.state is JobState.RUNNING]
        first = (running or pending)[0]
        return WorkflowInfo(first.state, 0, first)

    def _tail(self, steps: list[JobInfo], members: list[JobInfo] | None) -> WorkflowInfo | None:
        """Where the callback chain stands, or None while the members run. A callback
        recorded dead for a failed member is the end only while a member ended badly (dead,
        cancelled, expired): once a dead member is replayed, the chord runs on.
        ``members`` None: not read (then the answer is None for such a record: read them)."""
        after = ChainHandle._where(self, steps)
        if after.state is JobState.UNKNOWN:
            return None
        failed_member = after.job is not None and after.job.reason == MEMBER_FAILED
        member_bad = members is not None and any(m.state in _ENDED_BADLY for m in members)
        if after.step == 1 and failed_member and after.state is JobState.DEAD and not member_bad:
            return None
        return after

    def _read(self, jobs: list[Job[Any]], replies: list[Any]) -> list[JobInfo]:
        return [interpret(j.id, w) for j, w in zip(jobs, replies, strict=True)]

    def _look(self) -> tuple[WorkflowInfo, Job[Any] | None]:
        """The callback chain's state (a few status reads), else the first member still
        running: members are read one batch at a time as they end, not all on every wake,
        so waiting on a chord of n members costs about n status reads, not n squared."""
        call_many = self.app.broker.call_many
        tail = self._read(self.jobs, call_many([j._status_call() for j in self.jobs]))
        after = self._tail(tail, None)
        if after is None and tail[0].reason == MEMBER_FAILED:
            members = self._read(self.members, call_many([m._status_call() for m in self.members]))
            after = self._tail(tail, members)
            self._replayed(members)
        if after is not None:
            return after, self._active(after)
        while self._pending:
            head = self._pending[:PEEK]
            infos = self._read(head, call_many([j._status_call() for j in head]))
            return_at = self._advance(head, infos)
            if return_at is not None:
                return return_at
        if tail[0].state is not JobState.UNKNOWN or not self._recheck_due():
            return WorkflowInfo(JobState.QUEUED, 1, None), None
        # Every member ended and no callback: read them all, then the callback again.
        members = self._read(self.members, call_many([m._status_call() for m in self.members]))
        marks = self._mark_calls(members)
        marked = set().union(*call_many(marks)) if marks else set()
        tail = self._read(self.jobs, call_many([j._status_call() for j in self.jobs]))
        return self._unreported(members, marked, tail)

    async def _alook(self) -> tuple[WorkflowInfo, Job[Any] | None]:
        call_many = self.app.broker.acall_many
        tail = self._read(self.jobs, await call_many([j._status_call() for j in self.jobs]))
        after = self._tail(tail, None)
        if after is None and tail[0].reason == MEMBER_FAILED:
            members = self._read(
                self.members, await call_many([m._status_call() for m in self.members])
            )
            after = self._tail(tail, members)
            self._replayed(members)
        if after is not None:
            return after, self._active(after)
        while self._pending:
            head = self._pending[:PEEK]
            infos = self._read(head, await call_many([j._status_call() for j in head]))
            return_at = self._advance(head, infos)
            if return_at is not None:
                return return_at
        if tail[0].state is not JobState.UNKNOWN or not self._recheck_due():
            return WorkflowInfo(JobState.QUEUED, 1, None), None
        members = self._read(
            self.members, await call_many([m._status_call() for m in self.members])
        )
        marks = self._mark_calls(members)
        marked = set().union(*await call_many(marks)) if marks else set()
        tail = self._read(self.jobs, await call_many([j._status_call() for j in self.jobs]))
        return self._unreported(members, marked, tail)

    def _recheck_due(self) -> bool:
        """Whether to read every member again (at most every RECHECK_MEMBERS seconds)."""
        now = time.monotonic()
        if now < self._recheck_at:
            return False
        self._recheck_at = now + RECHECK_MEMBERS
        return True

    def _mark_calls(self, members: list[JobInfo]) -> list[Call[set[str]]]:
        """Which cancelled members are still marked in their queue's cancelled set: their
        record says cancelled (cancel.lua wrote it), but the worker that ends their entry,
        and tells the chord, has not read it yet. One SMISMEMBER per queue."""
        by_queue: dict[str, tuple[QueueKeys, list[str]]] = {}
        for job, info in zip(self.members, members, strict=True):
            if info.state is JobState.CANCELLED:
                keys = job._keys
                by_queue.setdefault(keys.queue, (keys, []))[1].append(job.id)
        return [cancel_flags(keys, ids) for keys, ids in by_queue.values()]

    def _unreported(
        self, members: list[JobInfo], marked: set[str], tail: list[JobInfo]
    ) -> tuple[WorkflowInfo, Job[Any] | None]:
        """Where the chord stands once every member was seen ended with no callback yet.

        A member tells the chord before (or in the step that) its worker ends it; a member
        cancelled while queued or delayed has its record at once but is ended (and tells
        the chord) when a worker reads its entry, until then marked in its queue's
        cancelled set (``marked``). So members read ended and not marked, then a callback
        read missing, means it will never be added (a member ended by a path that cannot
        tell the chord, or a chord hash that expired): the first member that ended badly
        raises its JobCancelled/JobFailed/JobExpired (JobNotFound, all done), rather than
        a wait for ever. Members replayed since are waited on again."""
        after = self._tail(tail, members)
        self._replayed(members)
        if after is not None:
            return after, self._active(after)
        if marked:
            return WorkflowInfo(JobState.QUEUED, 1, None), None
        if self._pending:
            first = next(m for m in members if not m.state.finished)
            waiting = WorkflowInfo(first.state, 0, first)
            return waiting, self._active(waiting)
        for job, ended in zip(self.members, members, strict=True):
            if ended.state is not JobState.DONE:
                job._outcome(ended)  # raises: the member that left the chord unfinished
        raise JobNotFound(
            f"chord {self.id}: every member ended but its callback {self.callback.id} was "
            "never added (the chord's hash expired or was deleted)"
        )

    def _replayed(self, members: list[JobInfo]) -> None:
        """Wait again on members that had ended and were replayed since."""
        self._pending = [
            j for j, i in zip(self.members, members, strict=True) if not i.state.finished
        ]

    def _advance(
        self, head: list[Job[Any]], infos: list[JobInfo]
    ) -> tuple[WorkflowInfo, Job[Any] | None] | None:
        """Drop the members at the front that ended; the first that did not, to wait on."""
        for i, info in enumerate(infos):
            if not info.state.finished:
                del self._pending[:i]
                return WorkflowInfo(info.state, 0, info), head[i]
        del self._pending[: len(head)]
        return None

    def _cancel_calls(self, reason: str | None) -> list[Call[Any]]:
        """Also delete the chord's hash: its callback will never read it."""
        drop: Call[Any] = command("DEL", self.callback._keys.chord(self.id))
        return [*super()._cancel_calls(reason), drop]

    def _cancelled(self, replies: list[Any]) -> list[CancelResult]:
        return super()._cancelled(replies[:-1])

    def _job_at(self, step: int) -> Job[Any]:
        if step == 0:
            raise AssertionError("members are not one job")
        return super()._job_at(step)

    def _active(self, info: WorkflowInfo) -> Job[Any] | None:
        if info.step == 0 and info.job is not None:
            return next((m for m in self.members if m.id == info.job.id), None)
        return super()._active(info)

    def _settled(self, info: WorkflowInfo) -> tuple[bool, Any]:
        if info.step == 0:
            if info.state is JobState.UNKNOWN:
                raise JobNotFound(f"no member of chord {self.id} in Redis")
            return False, None  # a member that ended badly is the callback's record to say
        return super()._settled(info)


class GroupHandle:
    """Jobs running in parallel; ``results()`` lists their results in member order."""

    def __init__(self, jobs: list[Job[Any]]) -> None:
        self.jobs = jobs

    def __repr__(self) -> str:
        return f"GroupHandle({len(self.jobs)} jobs)"

    def results(self, timeout: float | None = None) -> list[Any]:
        """Every member's result, in order; the first member that failed raises JobFailed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        out = []
        for job in self.jobs:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            out.append(job.result(timeout=left))
        return out

    async def results_async(self, timeout: float | None = None) -> list[Any]:
        deadline = None if timeout is None else time.monotonic() + timeout
        out = []
        for job in self.jobs:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            out.append(await job.result_async(timeout=left))
        return out
