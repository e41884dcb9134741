"""The job envelope as it travels in a stream entry: plain fields, JSON values, versioned.

A job is readable with ``redis-cli XRANGE`` and can be written by any language::

    XADD conveyor:{default}:ready:normal * version 1 task send_email \
        args '["a@example.com"]' kwargs '{}' enqueued_at 1700000000000 attempt 1

``id`` is optional: a job that has none is named by where it was first added
(``default:n:1700000000000-0``); jobs that move (retries, delays) carry it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, TypeVar

import msgspec

from .errors import PayloadError
from .signing import FIELD as SIGNATURE_FIELD
from .signing import Signer

T = TypeVar("T")

VERSION: Final = 1
REQUIRED: Final = ("task", "args", "kwargs")
DEFAULT_MAX_BYTES: Final = 1024 * 1024
MAX_DEPTH: Final = 64

_json_encode = msgspec.json.Encoder().encode
_json_decode = msgspec.json.Decoder().decode
_args_decode = msgspec.json.Decoder(list[Any]).decode
_kwargs_decode = msgspec.json.Decoder(dict[str, Any]).decode
_history_decode = msgspec.json.Decoder(list[dict[str, Any]]).decode


class Envelope(msgspec.Struct, frozen=True, kw_only=True):
    """A decoded job: what to run, with what, and how many times it has been tried."""

    task: str
    args: list[Any]
    kwargs: dict[str, Any]
    id: str | None = None
    enqueued_at: int = 0
    attempt: int = 1
    history: list[dict[str, Any]] = []
    version: int = VERSION


def encode_json(value: Any) -> bytes:
    try:
        return _json_encode(value)
    except (TypeError, msgspec.EncodeError) as exc:
        raise PayloadError(f"value is not JSON-serializable: {exc}") from exc


def decode_json(data: bytes | str) -> Any:
    return _json_decode(data)


def encode_fields(
    task: str,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    *,
    enqueued_at: int,
    attempt: int = 1,
    job_id: str | None = None,
    history: Sequence[Mapping[str, Any]] = (),
    max_bytes: int = DEFAULT_MAX_BYTES,
    signer: Signer | None = None,
) -> dict[str, bytes | str | int]:
    """Stream fields for a job. Field order is fixed so Redis can share field names."""
    fields: dict[str, bytes | str | int] = {
        "version": VERSION,
        "task": task,
        "args": encode_json(list(args)),
        "kwargs": encode_json(dict(kwargs)),
        "enqueued_at": enqueued_at,
        "attempt": attempt,
    }
    if signer is not None:
        fields[SIGNATURE_FIELD] = signer.sign(task, fields["args"], fields["kwargs"])  # type: ignore[arg-type]
    if job_id is not None:
        fields["id"] = job_id
    if history:
        fields["history"] = encode_json(list(history))
    size = len(fields["args"]) + len(fields["kwargs"])  # type: ignore[arg-type]
    if size > max_bytes:
        raise PayloadError(
            f"job for {task!r} is {size} bytes of arguments, over the {max_bytes}-byte limit; "
            "store large data elsewhere and pass a reference"
        )
    return fields


def envelope_fields(
    env: Envelope, signer: Signer | None = None, **changes: Any
) -> dict[str, bytes | str | int]:
    """Fields of an existing envelope, with some values changed (attempt, history, id)."""
    data = msgspec.structs.asdict(env) | changes
    return encode_fields(
        data["task"],
        data["args"],
        data["kwargs"],
        enqueued_at=data["enqueued_at"],
        attempt=data["attempt"],
        job_id=data["id"],
        history=data["history"],
        max_bytes=1 << 62,
        signer=signer,
    )


def _text(fields: Mapping[bytes, bytes], name: str) -> str:
    raw = fields.get(name.encode())
    if raw is None:
        raise PayloadError(f"missing field {name!r}")
    try:
        return raw.decode()
    except UnicodeDecodeError as exc:
        raise PayloadError(f"field {name!r} is not valid UTF-8") from exc


def _int(fields: Mapping[bytes, bytes], name: str, default: int) -> int:
    raw = fields.get(name.encode())
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise PayloadError(f"field {name!r} is not an integer: {raw[:40]!r}") from exc


_DECODE_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, RecursionError)


def _json_field(
    fields: Mapping[bytes, bytes], name: str, decode: Callable[[bytes], T], expected: str
) -> T:
    try:
        return decode(fields[name.encode()])
    except _DECODE_ERRORS as exc:
        raise PayloadError(f"field {name!r} is not {expected}: {exc}") from exc


def decode_fields(fields: Mapping[bytes, bytes], *, max_bytes: int = DEFAULT_MAX_BYTES) -> Envelope:
    """Read a stream entry into an Envelope, or raise PayloadError saying what is wrong."""
    size = sum(map(len, fields.values())) + sum(map(len, fields))
    if size > max_bytes:
        raise PayloadError(f"entry is {size} bytes, over the {max_bytes}-byte limit")
    version = _int(fields, "version", VERSION)
    if version != VERSION:
        raise PayloadError(f"unsupported envelope version {version} (this worker reads {VERSION})")
    for name in REQUIRED:
        if name.encode() not in fields:
            raise PayloadError(f"missing field {name!r}")
    task = _text(fields, "task")
    args = _json_field(fields, "args", _args_decode, "a JSON array")
    kwargs = _json_field(fields, "kwargs", _kwargs_decode, "a JSON object")
    _check_depth(fields[b"args"], args)
    _check_depth(fields[b"kwargs"], kwargs)
    history: list[dict[str, Any]] = []
    if b"history" in fields:
        history = _json_field(fields, "history", _history_decode, "a JSON array of objects")
    job_id = _text(fields, "id") if b"id" in fields else None
    attempt = _int(fields, "attempt", 1)
    if attempt < 1:
        raise PayloadError(f"field 'attempt' must be >= 1, not {attempt}")
    return Envelope(
        task=task,
        args=args,
        kwargs=kwargs,
        id=job_id,
        enqueued_at=_int(fields, "enqueued_at", 0),
        attempt=attempt,
        history=history,
        version=version,
    )


def _check_depth(raw: bytes, value: Any) -> None:
    """Refuse arguments nested deeper than MAX_DEPTH (cheap unless there are many brackets)."""
    if raw.count(b"[") + raw.count(b"{") <= MAX_DEPTH:
        return
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise PayloadError(f"arguments are nested more than {MAX_DEPTH} levels deep")
        if isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
        elif isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())


class JobRecord(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What Redis keeps about a job outside the streams: its state and its outcome."""

    state: str
    attempt: int | None = None
    result: Any = None
    error: str | None = None
    traceback: str | None = None
    reason: str | None = None
    finished_at: int | None = None
    worker: str | None = None
    level: str | None = None
    entry: str | None = None
    due: int | None = None
    consumer: str | None = None
    task: str | None = None


_record_encode = msgspec.json.Encoder().encode
_record_decode = msgspec.json.Decoder(JobRecord).decode


def encode_record(record: JobRecord) -> bytes:
    try:
        return _record_encode(record)
    except (TypeError, msgspec.EncodeError) as exc:
        raise PayloadError(f"task result is not JSON-serializable: {exc}") from exc


def decode_record(data: bytes) -> JobRecord:
    return _record_decode(data)
