"""Enqueueing a workflow: its first jobs, with every later job's id fixed in advance.

A chain adds its first step only (one script that also records where it sits); the steps
after it travel in that entry's ``workflow`` field and are added by the worker as each step
ends. A chord first opens its fan-in hash (the callback's entry, ready to add), then adds
its members, one script per ready stream and 500 members: a member can only end after the
hash exists, so no result is lost.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .. import producer
from ..broker import Call, command, run_script
from ..broker.calls import Arg
from ..broker.workflow_calls import chord_open
from ..exact import HintFor
from ..job import Job
from ..signing import resign
from ..task import Signature, TaskHost
from ..wire import encode_fields, encode_json
from .flow import FIELD, Flow, Member, Step, encode, member_id, step_id
from .handles import ChainHandle, ChordHandle, GroupHandle

if TYPE_CHECKING:
    from .canvas import Chain, Chord, Group

#: How long a chord's fan-in hash lives after its latest news (its opening, a member's
#: report): renewed by each (chord_live in lua/includes/workflow.lua, which repeats it).
CHORD_TTL_MS = 7 * 24 * 3600 * 1000
#: Members per enqueue script (as enqueue_many).
BATCH = 500


def _app(sigs: Sequence[Signature]) -> TaskHost:
    return sigs[0].task.app


def _shifted(sig: Signature) -> HintFor:
    """Argument types of a step whose first parameter takes the previous result."""
    hint_for = sig.task.hint_for

    def hints(key: int | str) -> tuple[str, Any]:
        return hint_for(key + 1 if isinstance(key, int) else key)

    return hints


def _entry(
    sig: Signature, job_id: str, flow: Flow, *, takes_previous: bool = False
) -> dict[str, bytes | str | int]:
    """The entry of a job that starts now: its arguments, options, id and workflow field."""
    task = sig.task
    app = task.app
    fields = encode_fields(
        task.name,
        sig.args,
        sig.kwargs,
        enqueued_at=int(time.time() * 1000),
        job_id=job_id,
        max_bytes=app.max_payload_bytes,
        hints=_shifted(sig) if takes_previous else task.hint_for,
    )
    fields.update(task._extra or {})
    fields[FIELD] = encode(flow)
    o = task.options
    return resign(fields, app.signer, o.queue, o.priority)


def _later(sig: Signature, job_id: str) -> Step:
    """A step added later: its arguments are checked now (JSON, size) with the previous
    result's place kept free."""
    task = sig.task
    encode_fields(
        task.name,
        [None, *sig.args],
        sig.kwargs,
        enqueued_at=0,
        max_bytes=task.app.max_payload_bytes,
        hints=task.hint_for,
    )
    o = task.options
    return Step(
        task=task.name,
        queue=o.queue,
        level=o.priority,
        id=job_id,
        args=list(sig.args),
        kwargs=dict(sig.kwargs),
        extra=dict(task._extra or {}),
    )


def _jobs(app: TaskHost, sigs: Sequence[Signature], ids: Sequence[str]) -> list[Job[Any]]:
    return [Job(app, i, s.task.convert_result) for s, i in zip(sigs, ids, strict=True)]


# -- chains ------------------------------------------------------------------------------------
def _chain(c: Chain) -> tuple[ChainHandle[Any], Call[tuple[bool, str]]]:
    steps = c.steps
    app = _app(steps)
    wid = uuid.uuid4().hex
    ids = [step_id(s.task.options.queue, wid, i) for i, s in enumerate(steps)]
    rest = [_later(s, i) for s, i in zip(steps[1:], ids[1:], strict=True)]
    flow = Flow(id=wid, step=0, steps=len(steps), next=rest)
    first = steps[0]
    o = first.task.options
    call = producer.signed(app.keys(o.queue), o.priority, ids[0], _entry(first, ids[0], flow))
    return ChainHandle(app, wid, _jobs(app, steps, ids)), call


def chain(c: Chain) -> ChainHandle[Any]:
    handle, call = _chain(c)
    handle.app.broker.call(call)
    return handle


async def chain_async(c: Chain) -> ChainHandle[Any]:
    handle, call = _chain(c)
    await handle.app.broker.acall(call)
    return handle


# -- groups ------------------------------------------------------------------------------------
def group(g: Group) -> GroupHandle:
    app = _app(g.members)
    return GroupHandle(app.enqueue_many(g.members))


async def group_async(g: Group) -> GroupHandle:
    app = _app(g.members)
    return GroupHandle(await app.enqueue_many_async(g.members))


# -- chords ------------------------------------------------------------------------------------
def _chord(c: Chord) -> tuple[ChordHandle[Any], Call[int], list[Call[Any]]]:
    members = c.group.members
    steps = c.callback.steps
    app = _app(members)
    wid = uuid.uuid4().hex
    callback = steps[0]
    cq, clevel = callback.task.options.queue, callback.task.options.priority
    ids = [step_id(s.task.options.queue, wid, i + 1) for i, s in enumerate(steps)]
    rest = [_later(s, i) for s, i in zip(steps[1:], ids[1:], strict=True)]
    cb_flow = Flow(id=wid, step=1, steps=1 + len(steps), next=rest, gather=len(members))
    cb_fields = _entry(callback, ids[0], cb_flow, takes_previous=True)
    flat = [x.decode() if isinstance(x, bytes) else str(x) for kv in cb_fields.items() for x in kv]
    open_call = chord_open(app.keys(cq).chord(wid), encode_json(flat), CHORD_TTL_MS)
    member_ids = [member_id(m.task.options.queue, wid, k) for k, m in enumerate(members)]
    streams: dict[tuple[str, str], list[tuple[str, dict[str, bytes | str | int]]]] = {}
    for k, (m, job_id) in enumerate(zip(members, member_ids, strict=True)):
        ref = Member(
            index=k,
            size=len(members),
            queue=cq,
            level=clevel,
            callback=ids[0],
            on_error=c.on_error,
        )
        flow = Flow(id=wid, step=0, steps=1 + len(steps), member=ref)
        o = m.task.options
        streams.setdefault((o.queue, o.priority), []).append((job_id, _entry(m, job_id, flow)))
    calls: list[Call[Any]] = []
    for (queue, level), jobs in streams.items():
        keys = app.keys(queue)
        for start in range(0, len(jobs), BATCH):
            part = jobs[start : start + BATCH]
            args: list[Arg] = [level]
            for _, fields in part:
                args.append(len(fields))
                args += [x for kv in fields.items() for x in kv]
            records = [keys.record(job_id) for job_id, _ in part]
            add: Call[Any] = run_script("enqueue_many_signed", [keys.stream(level), *records], args)
            calls.append(Call(add.command, add.parse, add.script, retry_safe=False))
    handle: ChordHandle[Any] = ChordHandle(
        app, wid, _jobs(app, steps, ids), _jobs(app, members, member_ids), c.on_error
    )
    return handle, open_call, calls


def chord(c: Chord) -> ChordHandle[Any]:
    handle, open_call, calls = _chord(c)
    broker = handle.app.broker
    broker.call(open_call)
    try:
        broker.call_many(calls)
    except BaseException:
        with contextlib.suppress(Exception):
            broker.call(_close(handle))
        raise
    return handle


async def chord_async(c: Chord) -> ChordHandle[Any]:
    handle, open_call, calls = _chord(c)
    broker = handle.app.broker
    await broker.acall(open_call)
    try:
        await broker.acall_many(calls)
    except BaseException:
        with contextlib.suppress(Exception):
            await broker.acall(_close(handle))
        raise
    return handle


def _close(handle: ChordHandle[Any]) -> Call[int]:
    """Delete the hash of a chord whose members could not all be added (the caller gets
    the error, and no handle): the members that were added run, their reports find no
    chord, and no callback is ever added, rather than a hash left waiting for its lifetime.
    Best effort: when Redis is unreachable it stays until it expires."""
    return command("DEL", handle.callback._keys.chord(handle.id))
