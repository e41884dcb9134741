"""Turning a task call into Calls: immediate, delayed, or many at once (pure, no I/O)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from .broker import Call, operations
from .broker.operations import Unique
from .keys import QueueKeys, delayed_job_id, job_id_for
from .signing import Signer
from .wire import encode_fields, encode_json


def now_ms() -> int:
    return int(time.time() * 1000)


def seconds(delay: float | timedelta) -> float:
    return delay.total_seconds() if isinstance(delay, timedelta) else float(delay)


def epoch_ms(when: datetime | float) -> int:
    """A datetime (naive means UTC) or a UNIX timestamp, in milliseconds."""
    if isinstance(when, datetime):
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        return int(when.timestamp() * 1000)
    return int(float(when) * 1000)


def immediate(
    keys: QueueKeys,
    level: str,
    task: str,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    max_bytes: int,
    unique: Unique | None = None,
    signer: Signer | None = None,
) -> Call[tuple[bool, str]]:
    """One XADD (or one script, with a unique key); the job id comes from the entry id."""
    fields = encode_fields(
        task, args, kwargs, enqueued_at=now_ms(), max_bytes=max_bytes, signer=signer
    )
    prefix = job_id_for(keys.queue, level, "")
    if unique is not None:
        return operations.enqueue_unique(keys, level, fields, unique, prefix)
    return Call(
        operations.enqueue(keys, level, fields).command,
        lambda reply: (True, prefix + reply.decode()),
    )


def immediate_many(
    keys: QueueKeys,
    level: str,
    jobs: Sequence[tuple[str, Sequence[Any], Mapping[str, Any]]],
    max_bytes: int,
    signer: Signer | None = None,
) -> Call[list[tuple[bool, str]]]:
    """Jobs ``(task, args, kwargs)`` for one ready stream: one script adds them all."""
    enqueued_at = now_ms()
    fields = [
        encode_fields(
            task, args, kwargs, enqueued_at=enqueued_at, max_bytes=max_bytes, signer=signer
        )
        for task, args, kwargs in jobs
    ]
    prefix = job_id_for(keys.queue, level, "")
    add = operations.enqueue_many(keys, level, fields)
    return Call(
        add.command, lambda reply: [(True, prefix + i) for i in add.parse(reply)], add.script
    )


def delayed_payload(fields: Mapping[str, Any], level: str) -> bytes:
    """The envelope kept in the payloads hash while a job waits: all values as strings."""
    data = {k: v.decode() if isinstance(v, bytes) else str(v) for k, v in fields.items()}
    data["level"] = level
    return encode_json(data)


def scheduled(
    keys: QueueKeys,
    level: str,
    task: str,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    max_bytes: int,
    *,
    delay_ms: int = 0,
    at_ms: int | None = None,
    unique: Unique | None = None,
    signer: Signer | None = None,
) -> Call[tuple[bool, str]]:
    job_id = delayed_job_id(keys.queue, uuid.uuid4().hex)
    fields = encode_fields(
        task,
        args,
        kwargs,
        enqueued_at=now_ms(),
        job_id=job_id,
        max_bytes=max_bytes,
        signer=signer,
    )
    payload = delayed_payload(fields, level)
    return operations.schedule(keys, job_id, payload, delay_ms=delay_ms, at_ms=at_ms, unique=unique)
