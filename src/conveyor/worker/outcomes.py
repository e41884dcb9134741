"""What Redis should hold after a job ends one way or another (pure, no I/O)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from ..broker.operations import Delivery
from ..errors import PayloadError
from ..signing import Signer, resign
from ..wire import Envelope, JobRecord, encode_json, encode_record, envelope_fields
from ..workflows.flow import FIELD_BYTES as FLOW_FIELD_BYTES
from ..workflows.flow import Flow
from ..workflows.flow import decode as decode_flow

#: Entry fields of the task's options (``expires`` ms, a ``unique`` key held until done) and
#: its place in a workflow (what follows it) and the trace context an enqueue carries
#: (tracing.py) that every move of the job keeps: a retry, a bounce or a rate-limited wait
#: must not drop them.
CARRIED_FIELDS = (b"expires", b"unique", FLOW_FIELD_BYTES, b"traceparent", b"tracestate")
#: When the job first became ready (Redis ms): written by the first move that is not a new
#: attempt (a rate- or concurrency-limited wait, a shutdown requeue), kept by later ones, so
#: its ``expires`` clock (expire.lua) does not restart each time it comes back as a new
#: entry. A retry drops it: a retried job becomes ready again at its due time.
READY_AT_FIELD = b"ready_at"

TRACEBACK_LIMIT = 8000
#: Attempts kept in a job's history, newest last: a retry must never outgrow the size limit
#: its first attempt met, so the history is bounded in count and in size.
HISTORY_KEEP = 10
#: Characters of each attempt's error kept in the history (the dead record keeps it whole).
HISTORY_ERROR_CHARS = 1000


def now_ms() -> int:
    return int(time.time() * 1000)


def done_record(env: Envelope, result: Any, worker: str, result_type: Any = None) -> bytes:
    """The record of a job that succeeded; PayloadError when JSON cannot carry its result
    (``result_type``, the task's return annotation, says how to convert one back)."""
    return encode_record(
        JobRecord(
            state="done",
            attempt=env.attempt,
            result=result,
            finished_at=now_ms(),
            worker=worker,
            task=env.task,
        ),
        result_type,
    )


def attempt_entry(env: Envelope, error: str, worker: str) -> dict[str, Any]:
    return {
        "attempt": env.attempt,
        "error": clip_error(error),
        "at": now_ms(),
        "worker": worker,
    }


def clip_error(error: str) -> str:
    if len(error) <= HISTORY_ERROR_CHARS:
        return error
    half = (HISTORY_ERROR_CHARS - 5) // 2
    return error[:half] + " ... " + error[-half:]


def next_history(env: Envelope, error: str, worker: str) -> list[dict[str, Any]]:
    """The history a job carries after this failed attempt: the last HISTORY_KEEP attempts,
    each error clipped (older entries written by another version are clipped too)."""
    kept = [*env.history[-(HISTORY_KEEP - 1) :], attempt_entry(env, error, worker)]
    return [_clipped(entry) for entry in kept]


def _clipped(entry: dict[str, Any]) -> dict[str, Any]:
    error = entry.get("error")
    if isinstance(error, str) and len(error) > HISTORY_ERROR_CHARS:
        return {**entry, "error": clip_error(error)}
    return entry


def retry_record(env: Envelope, error: str) -> bytes:
    return encode_record(
        JobRecord(state="retrying", attempt=env.attempt, error=error, task=env.task)
    )


def scheduled_record(env: Envelope) -> bytes:
    """A job waiting in the delayed set for another worker (status reads its due time)."""
    return encode_record(JobRecord(state="scheduled", attempt=env.attempt, task=env.task))


def dead_record(
    *,
    task: str | None,
    attempt: int | None,
    reason: str,
    error: str | None,
    traceback: str | None,
    worker: str,
) -> bytes:
    return encode_record(
        JobRecord(
            state="dead",
            attempt=attempt,
            reason=reason,
            error=error,
            traceback=_clip(traceback),
            finished_at=now_ms(),
            worker=worker,
            task=task,
        )
    )


def dead_fields(
    d: Delivery,
    *,
    job_id: str,
    reason: str,
    error: str | None,
    traceback: str | None,
    history: Sequence[Mapping[str, Any]] | None,
    worker: str,
) -> list[tuple[str, bytes | str]]:
    """The dead-letter entry: the original fields untouched, then why and where it died.

    The entry's own fields (its ``history`` too) are kept byte for byte, because a signed
    job's replay verifies them; the job's whole history, this attempt included, goes under
    ``dead_history`` like everything else the dead-letter step adds.
    """
    fields: list[tuple[str, bytes | str]] = [
        (k.decode(errors="replace"), v) for k, v in d.fields.items()
    ]
    if b"id" not in d.fields:
        fields.append(("id", job_id))
    fields += [
        ("dead_reason", reason),
        ("dead_error", error or ""),
        ("dead_traceback", _clip(traceback) or ""),
        ("dead_at", str(now_ms())),
        ("dead_worker", worker),
        ("dead_from", f"{d.level}:{d.entry_id}"),
        ("dead_deliveries", str(d.deliveries)),
    ]
    if history:
        fields.append(("dead_history", encode_json(list(history)).decode()))
    flow = flow_of(d)
    if flow is not None:
        task = d.fields.get(b"task", b"?").decode(errors="replace")
        fields.append(("dead_workflow", flow.describe(task)))
    return fields


def flow_of(d: Delivery) -> Flow | None:
    """The job's place in a workflow (its ``workflow`` field), None for a plain job or a
    field that does not decode (the job is dead-lettered as malformed then)."""
    raw = d.fields.get(FLOW_FIELD_BYTES)
    if raw is None:
        return None
    try:
        return decode_flow(raw)
    except PayloadError:
        return None


def _clip(text: str | None) -> str | None:
    if text is None or len(text) <= TRACEBACK_LIMIT:
        return text
    return text[: TRACEBACK_LIMIT // 2] + "\n...\n" + text[-TRACEBACK_LIMIT // 2 :]


def ready_at(d: Delivery) -> str:
    """When the job of ``d`` first became ready: its ``ready_at`` field, else its entry id's
    time (the enqueue, or the promotion of a delayed or retried job)."""
    raw = d.fields.get(READY_AT_FIELD)
    return raw.decode(errors="replace") if raw else d.entry_id.split("-", 1)[0]


def moved_fields(
    env: Envelope, d: Delivery, signer: Signer | None, *, keep_clock: bool = False, **changes: Any
) -> dict[str, bytes | str | int]:
    """The fields of a job moving to the delayed set: its envelope with ``changes``, the
    option fields its entry carried, signed afresh for the stream it comes back to.
    ``keep_clock`` (a wait for a limit, not a new attempt) keeps when it first became
    ready, for its ``expires``."""
    fields = envelope_fields(env, None, **changes)
    for name in CARRIED_FIELDS:
        value = d.fields.get(name)
        if value is not None and name.decode() not in fields:
            fields[name.decode()] = value.decode(errors="replace")
    if keep_clock:
        fields[READY_AT_FIELD.decode()] = ready_at(d)
    return resign(fields, signer, d.queue, d.level)
