"""Turning a task call into Calls: immediate, delayed, or many at once (pure, no I/O).

An unsigned job is named by its first entry, so its enqueue is one XADD. A job of an app
that signs carries an id minted here, covered by its signature, so a copy of its entry can
be recognised by the worker as a job that already ran; one script adds it and records
where it sits (so ``job.status()`` finds it by id).
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from itertools import chain
from typing import Any

from .broker import Call, enqueue_calls, run_script, text
from .broker.calls import Arg
from .broker.enqueue_calls import Unique
from .errors import ConfigurationError
from .exact import HintFor
from .keys import QueueKeys, delayed_job_id, job_id_for
from .signing import Signer, resign
from .wire import encode_fields, encode_json

#: Fields an entry carries for the ``expires`` option (whole ms) and for a unique key held
#: until the job ends (its name): what the worker reads; absent when the option is not set,
#: so a plain job's entry is unchanged.
EXPIRES_FIELD = "expires"
UNIQUE_FIELD = "unique"

#: Extra stream fields of a job's options (``option_fields``); empty for a plain job.
Extra = Mapping[str, str | int]

#: One job for ``immediate_many``: task name, args, kwargs, and the argument types (or None).
BulkJob = tuple[str, Sequence[Any], Mapping[str, Any], HintFor | None]

#: Delays and due times beyond this many seconds (about 3,000 years) are refused.
MAX_SECONDS = 1e11


def now_ms() -> int:
    return int(time.time() * 1000)


def seconds(delay: float | timedelta) -> float:
    value = delay.total_seconds() if isinstance(delay, timedelta) else float(delay)
    if not math.isfinite(value) or abs(value) > MAX_SECONDS:
        raise ConfigurationError(
            f"delay must be a finite number of seconds (at most {MAX_SECONDS:g}), not {delay!r}"
        )
    return value


def delay_ms(delay: float | timedelta) -> int:
    """A delay in ms; a negative delay means due now (like enqueue_at with a past time)."""
    return max(0, int(seconds(delay) * 1000))


def epoch_ms(when: datetime | float) -> int:
    """A datetime (naive means UTC) or a UNIX timestamp, in milliseconds."""
    if isinstance(when, datetime):
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        return int(when.timestamp() * 1000)
    try:
        value = float(when)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(
            f"when must be a datetime or a UNIX timestamp, not {when!r}"
        ) from exc
    if not math.isfinite(value) or not 0 <= value <= MAX_SECONDS:
        raise ConfigurationError(
            f"when must be a datetime or a finite UNIX timestamp >= 0, not {when!r}"
        )
    return int(value * 1000)


def mint_id(queue: str) -> str:
    return delayed_job_id(queue, uuid.uuid4().hex)


def option_fields(expires_ms: int | None, unique: Unique | None) -> dict[str, str | int]:
    """The option fields of an entry: ``expires`` when set, ``unique`` for a key held until
    the job ends (window 0), so the step that ends the job can free it."""
    extra: dict[str, str | int] = {}
    if expires_ms is not None:
        extra[EXPIRES_FIELD] = expires_ms
    if unique is not None and unique.window_ms == 0:
        extra[UNIQUE_FIELD] = unique.key
    return extra


def _with_extra(
    fields: dict[str, bytes | str | int],
    extra: Extra | None,
    signer: Signer | None,
    queue: str,
    level: str,
) -> dict[str, bytes | str | int]:
    """``fields`` plus the option fields, signed again when signed (the signature covers them)."""
    if not extra:
        return fields
    fields.update(extra)
    if signer is not None:
        fields.pop("sig", None)
        fields = dict(resign(fields, signer, queue, level))
    return fields


def _pairs(fields: Mapping[str, Arg]) -> list[Arg]:
    return list(chain.from_iterable(fields.items()))


def immediate(
    keys: QueueKeys,
    level: str,
    task: str,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    max_bytes: int,
    unique: Unique | None = None,
    signer: Signer | None = None,
    hints: HintFor | None = None,
    extra: Extra | None = None,
) -> Call[tuple[bool, str]]:
    """One XADD (or one script, with a unique key or a signer). ``extra``: option fields
    (``option_fields``), none for a plain job."""
    if signer is not None:
        job_id, fields = _with_id(keys, level, task, args, kwargs, max_bytes, signer, hints, extra)
        return signed(keys, level, job_id, fields, unique)
    fields = encode_fields(
        task, args, kwargs, enqueued_at=now_ms(), max_bytes=max_bytes, hints=hints
    )
    if extra:
        fields.update(extra)
    prefix = job_id_for(keys.queue, level, "")
    if unique is not None:
        return enqueue_calls.enqueue_unique(keys, level, fields, unique, prefix)
    return Call(
        enqueue_calls.enqueue(keys, level, fields).command,
        lambda reply: (True, prefix + reply.decode()),
        retry_safe=False,
    )


def signed(
    keys: QueueKeys,
    level: str,
    job_id: str,
    fields: Mapping[str, Arg],
    unique: Unique | None = None,
) -> Call[tuple[bool, str]]:
    """Add signed fields carrying ``job_id`` and record where the entry sits (one script)."""
    key_list = [keys.stream(level), keys.record(job_id)]
    args: list[Arg] = [level, job_id, ""]
    if unique is not None:
        key_list.append(keys.unique(unique.key))
        args[2] = unique.window_ms
    call = run_script(
        "enqueue_signed", key_list, args + _pairs(fields), lambda r: (bool(int(r[0])), text(r[1]))
    )
    # Without a unique key, running it twice would add the job twice.
    return Call(call.command, call.parse, call.script, retry_safe=unique is not None)


def immediate_many(
    keys: QueueKeys,
    level: str,
    jobs: Sequence[BulkJob],
    max_bytes: int,
    signer: Signer | None = None,
    extra: Extra | None = None,
) -> Call[list[tuple[bool, str]]]:
    """Jobs ``(task, args, kwargs, hints)`` for one ready stream: one script adds them all.
    ``extra``: option fields every one of them carries."""
    enqueued_at = now_ms()
    if signer is not None:
        ids = [mint_id(keys.queue) for _ in jobs]
        args: list[Arg] = [level]
        for job_id, (task, a, kw, hints) in zip(ids, jobs, strict=True):
            fields = encode_fields(
                task,
                a,
                kw,
                enqueued_at=enqueued_at,
                job_id=job_id,
                max_bytes=max_bytes,
                signer=signer,
                queue=keys.queue,
                level=level,
                hints=hints,
            )
            fields = _with_extra(fields, extra, signer, keys.queue, level)
            args.append(len(fields))
            args += _pairs(fields)
        records = [keys.record(job_id) for job_id in ids]
        add: Call[Any] = run_script("enqueue_many_signed", [keys.stream(level), *records], args)
        return Call(add.command, lambda _: [(True, i) for i in ids], add.script, retry_safe=False)
    all_fields = [
        encode_fields(task, a, kw, enqueued_at=enqueued_at, max_bytes=max_bytes, hints=hints)
        for task, a, kw, hints in jobs
    ]
    if extra:
        for fields in all_fields:
            fields.update(extra)
    prefix = job_id_for(keys.queue, level, "")
    many = enqueue_calls.enqueue_many(keys, level, all_fields)
    return Call(
        many.command,
        lambda reply: [(True, prefix + i) for i in many.parse(reply)],
        many.script,
        retry_safe=False,
    )


def readd(
    keys: QueueKeys, level: str, fields: Mapping[str, Arg], signer: Signer | None
) -> Call[str]:
    """Add the fields of a past entry again as a new job (history replay); its job id.

    Under a signer the new job gets a minted id and a fresh signature for where it goes.
    """
    if signer is None:
        plain = {k: v for k, v in fields.items() if k not in ("sig", "id")}
        prefix = job_id_for(keys.queue, level, "")
        add = enqueue_calls.enqueue(keys, level, plain)
        return Call(add.command, lambda reply: prefix + text(reply), retry_safe=False)
    job_id = mint_id(keys.queue)
    again = resign({**fields, "id": job_id}, signer, keys.queue, level)
    call = signed(keys, level, job_id, again)
    return Call(call.command, lambda reply: call.parse(reply)[1], call.script, retry_safe=False)


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
    hints: HintFor | None = None,
    extra: Extra | None = None,
) -> Call[tuple[bool, str]]:
    """A job for the delayed set; signed for the stream it will be promoted to."""
    job_id, fields = _with_id(keys, level, task, args, kwargs, max_bytes, signer, hints, extra)
    payload = delayed_payload(fields, level)
    return enqueue_calls.schedule(
        keys, job_id, payload, delay_ms=delay_ms, at_ms=at_ms, unique=unique
    )


def _with_id(
    keys: QueueKeys,
    level: str,
    task: str,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    max_bytes: int,
    signer: Signer | None,
    hints: HintFor | None,
    extra: Extra | None = None,
) -> tuple[str, dict[str, bytes | str | int]]:
    """A minted id and the fields that carry it (signed for ``level`` under a signer)."""
    job_id = mint_id(keys.queue)
    fields = encode_fields(
        task,
        args,
        kwargs,
        enqueued_at=now_ms(),
        job_id=job_id,
        max_bytes=max_bytes,
        signer=signer,
        queue=keys.queue,
        level=level,
        hints=hints,
    )
    return job_id, _with_extra(fields, extra, signer, keys.queue, level)
