"""What a workflow job hands on when it ends (pure: the worker runs the calls).

Where what follows sits on the finished job's own queue (its hash tag), it rides in the
ack itself (complete.lua): one script acks the job and adds the next step or reports to
the chord, so a crash cannot split them. Where it sits on another queue, no script can
touch both, so it is forwarded first (forward_step.lua, chord_report.lua) and the job is
acked after: a worker that dies in between leaves the job to be reclaimed and run again,
and its second forward is refused by the target queue (a marker named by the next job's
deterministic id; the chord's slot for that member is taken), so nothing is added twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import chain as flatten
from typing import Any

from ..broker import Call, command, workflow_calls
from ..broker.calls import Arg
from ..broker.workflow_calls import ChordReport, DropChord, Handoff, NextStep
from ..hooks import CARRIED
from ..keys import QueueKeys
from ..signing import Signer, resign
from ..wire import encode_fields, encode_json
from .flow import FIELD, Flow, Step, encode

#: How long a forward marker lives: far longer than a step can wait for its ack (a lease
#: timeout, times its max deliveries), so a re-run of the step finds it.
MARKER_TTL_MS = 7 * 24 * 3600 * 1000


@dataclass
class Plan:
    """The handoffs of one finished job: those its ack carries (same queue) and the calls
    to run, in order, before the ack (other queues)."""

    handoffs: list[Handoff] = field(default_factory=list)
    forwards: list[Call[Any]] = field(default_factory=list)


def step_fields(
    step: Step,
    first: Any,
    rest: Sequence[Step],
    flow: Flow,
    signer: Signer | None,
    max_bytes: int,
) -> dict[str, bytes | str | int]:
    """The entry of ``step`` with ``first`` (the previous result) before its own arguments,
    carrying the steps after it, and the trace context of the run that hands it on (the
    worker's CARRIED, when tracing is on); signed for where it goes."""
    fields = encode_fields(
        step.task,
        [first, *step.args],
        step.kwargs,
        enqueued_at=int(time.time() * 1000),
        job_id=step.id,
        max_bytes=max_bytes,
    )
    fields.update(step.extra)
    fields.update(CARRIED.get())
    nxt = Flow(id=flow.id, step=flow.step + 1, steps=flow.steps, next=list(rest))
    fields[FIELD] = encode(nxt)
    return resign(fields, signer, step.queue, step.level)


def flat(fields: dict[str, bytes | str | int]) -> tuple[Arg, ...]:
    return tuple(flatten.from_iterable(fields.items()))


def next_step(
    keys: Callable[[str], QueueKeys], step: Step, fields: dict[str, bytes | str | int]
) -> NextStep:
    k = keys(step.queue)
    return NextStep(k.stream(step.level), k.record(step.id), step.level, flat(fields))


def on_success(
    keys: Callable[[str], QueueKeys],
    queue: str,
    flow: Flow,
    result: Any,
    signer: Signer | None,
    max_bytes: int,
) -> Plan:
    """What the success of a workflow job on ``queue`` hands on. PayloadError when the next
    step cannot carry the result (over the size limit)."""
    plan = Plan()
    if flow.gather:
        plan.handoffs.append(DropChord(keys(queue).chord(flow.id)))
    if flow.next:
        step, rest = flow.next[0], flow.next[1:]
        fields = step_fields(step, result, rest, flow, signer, max_bytes)
        nxt = next_step(keys, step, fields)
        if step.queue == queue:
            plan.handoffs.append(nxt)
        else:
            marker = keys(step.queue).handoff(step.id)
            plan.forwards.append(workflow_calls.forward_step(marker, nxt, MARKER_TTL_MS))
    if flow.member is not None:
        report = chord_report(keys, flow, encode_json(result))
        if flow.member.queue == queue:
            plan.handoffs.append(report)
        else:
            plan.forwards.append(workflow_calls.chord_report(report))
    return plan


def chord_report(
    keys: Callable[[str], QueueKeys], flow: Flow, value: bytes, *, error: bool = False
) -> ChordReport:
    """A member's report: its result, or (``error``) the error it stands for."""
    m = flow.member
    assert m is not None
    k = keys(m.queue)
    return ChordReport(
        k.chord(flow.id),
        m.index,
        value,
        m.size,
        k.stream(m.level),
        k.record(m.callback),
        m.level,
        error,
    )


def error_value(job_id: str, reason: str, error: str) -> bytes:
    """What a member that died stands for in its callback's list under on_error="include"."""
    return encode_json({"error": error, "reason": reason, "job_id": job_id})


def gather(keys: QueueKeys, flow: Flow) -> Call[list[bytes | None]]:
    """The chord's results in member order (one HMGET), read by its callback: a member's
    result, else the error it stands for (``e<index>``, on_error="include"), else None."""
    n = flow.gather
    names = [str(i) for i in range(n)] + [f"e{i}" for i in range(n)]

    def parse(reply: list[bytes | None]) -> list[bytes | None]:
        return [reply[i] if reply[i] is not None else reply[n + i] for i in range(n)]

    return command("HMGET", keys.chord(flow.id), *names, parse=parse)
