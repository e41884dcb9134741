"""What Redis should hold after a job ends one way or another (pure, no I/O)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from ..broker.operations import Delivery
from ..wire import Envelope, JobRecord, encode_json, encode_record

TRACEBACK_LIMIT = 8000


def now_ms() -> int:
    return int(time.time() * 1000)


def done_record(env: Envelope, result: Any, worker: str) -> bytes:
    return encode_record(
        JobRecord(
            state="done",
            attempt=env.attempt,
            result=result,
            finished_at=now_ms(),
            worker=worker,
            task=env.task,
        )
    )


def attempt_entry(env: Envelope, error: str, worker: str) -> dict[str, Any]:
    return {"attempt": env.attempt, "error": error, "at": now_ms(), "worker": worker}


def retry_record(env: Envelope, error: str) -> bytes:
    return encode_record(
        JobRecord(state="retrying", attempt=env.attempt, error=error, task=env.task)
    )


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
    history: list[Mapping[str, Any]] | None,
    worker: str,
) -> list[tuple[str, bytes | str]]:
    """The dead-letter entry: the original fields untouched, then why and where it died."""
    fields: list[tuple[str, bytes | str]] = [
        (k.decode(errors="replace"), v) for k, v in d.fields.items() if k not in (b"history",)
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
        fields.append(("history", encode_json(list(history)).decode()))
    return fields


def _clip(text: str | None) -> str | None:
    if text is None or len(text) <= TRACEBACK_LIMIT:
        return text
    return text[: TRACEBACK_LIMIT // 2] + "\n...\n" + text[-TRACEBACK_LIMIT // 2 :]
