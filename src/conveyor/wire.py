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

from .errors import ConfigurationError, PayloadError
from .exact import (
    MAX_DEPTH,
    PLAIN_TYPES,
    HintFor,
    check_depth_encoded,
    check_exact,
    check_result,
    plain,
)
from .keys import MAX_JOB_ID, parse_job_id
from .signing import Signer

T = TypeVar("T")

VERSION: Final = 1
REQUIRED: Final = ("task", "args", "kwargs")
DEFAULT_MAX_BYTES: Final = 1024 * 1024
#: What an entry may hold beyond its task and arguments (the limit the producer applies):
#: field names, timestamps, the signature, and a bounded attempt history.
ENTRY_OVERHEAD: Final = 64 * 1024
#: Fewer bytes of JSON cannot hold MAX_DEPTH + 1 nested bracket pairs.
_DEPTH_BYTES: Final = 2 * MAX_DEPTH + 2

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
    except RecursionError as exc:
        raise PayloadError(
            f"value is nested too deeply to encode (more than {MAX_DEPTH} levels are refused)"
        ) from exc


def decode_json(data: bytes | str) -> Any:
    return _json_decode(data)


def payload_size(task: bytes | str, args: bytes, kwargs: bytes) -> int:
    """The bytes the size limit counts, the same at enqueue and in the worker: the task name
    and the JSON of the arguments. The rest of an entry is bounded by ENTRY_OVERHEAD."""
    name = task if isinstance(task, bytes) else task.encode()
    return len(name) + len(args) + len(kwargs)


def _check_size(task: str, size: int, max_bytes: int) -> None:
    if size > max_bytes:
        raise PayloadError(
            f"job for {task!r} is {size} bytes of task name and arguments, over the "
            f"{max_bytes}-byte limit; store large data elsewhere and pass a reference"
        )


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
    queue: str | None = None,
    level: str | None = None,
    hints: HintFor | None = None,
) -> dict[str, bytes | str | int]:
    """Stream fields for a job. Field order is fixed so Redis can share field names.

    Values JSON cannot carry exactly (nan, sets, bytes, int dict keys, datetimes...) raise
    PayloadError unless ``hints`` gives the argument a type that converts them back. With a
    ``signer``, the fields are signed for the ``queue`` and ``level`` they are added to.
    """
    arg_list = list(args)
    kwarg_dict = dict(kwargs)
    try:
        args_json = _json_encode(arg_list)
        kwargs_json = _json_encode(kwarg_dict) if kwarg_dict else b"{}"
    except (TypeError, msgspec.EncodeError, RecursionError):
        encode_json(arg_list)  # raises the PayloadError that says what is wrong
        encode_json(kwarg_dict)
        raise
    size = (len(task) if task.isascii() else len(task.encode())) + len(args_json)
    size += len(kwargs_json)
    if size > max_bytes:
        _check_size(task, size, max_bytes)
    if size > _DEPTH_BYTES:
        check_depth_encoded(args_json, kwargs_json)
    # The cheap proof of exactness, inline for speed (see exact.plain); else check_exact.
    for value in arg_list:
        if type(value) not in PLAIN_TYPES and (type(value) is not float or value - value != 0.0):
            if hints is not _decoded:
                check_exact(arg_list, kwarg_dict, args_json, kwargs_json, hints)
            break
    else:
        if kwarg_dict and not plain(kwarg_dict.values()) and hints is not _decoded:
            check_exact(arg_list, kwarg_dict, args_json, kwargs_json, hints)
    # version 1 and a first attempt are what a reader assumes when the field is missing:
    # left out, every worker fetch copies a third fewer strings (inside fetch.lua and out).
    fields: dict[str, bytes | str | int] = {
        "task": task,
        "args": args_json,
        "kwargs": kwargs_json,
        "enqueued_at": enqueued_at,
    }
    if attempt != 1:
        fields["attempt"] = attempt
    if job_id is not None:
        fields["id"] = job_id
    if history:
        fields["history"] = encode_json(list(history))
    if signer is not None:
        if queue is None or level is None:
            raise ConfigurationError("signing a job needs the queue and level it is added to")
        fields["sig"] = signer.sign(fields, queue, level)
    return fields


def envelope_fields(
    env: Envelope,
    signer: Signer | None = None,
    *,
    queue: str | None = None,
    level: str | None = None,
    **changes: Any,
) -> dict[str, bytes | str | int]:
    """Fields of an existing envelope, with some values changed (attempt, history, id).

    With a signer, pass the ``queue`` and ``level`` the entry will sit in (a retry comes
    back from the delayed set to the stream it was read from).
    """
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
        queue=queue,
        level=level,
        hints=_decoded,
    )


def _decoded(key: int | str) -> tuple[str, Any]:
    """Hints for values decoded from JSON: exact by construction, never checked."""
    return str(key), None


# -- decoding ------------------------------------------------------------------------------------
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
    if len(raw) > 20 or not raw.lstrip(b"-").isdigit() or not raw.isascii():
        raise PayloadError(f"field {name!r} is not an integer: {raw[:40]!r}")
    return int(raw)


_VERSION_BYTES: Final = str(VERSION).encode()
_DECODE_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, RecursionError)


def _json_field(
    fields: Mapping[bytes, bytes], name: str, decode: Callable[[bytes], T], expected: str
) -> T:
    try:
        return decode(fields[name.encode()])
    except _DECODE_ERRORS as exc:
        raise PayloadError(f"field {name!r} is not {expected}: {exc}") from exc


def _job_id(fields: Mapping[bytes, bytes]) -> str | None:
    raw = fields.get(b"id")
    if raw is None:
        return None
    if len(raw) > MAX_JOB_ID:
        raise PayloadError(f"field 'id' is {len(raw)} bytes long, over {MAX_JOB_ID}")
    job_id = _text(fields, "id")
    try:
        parse_job_id(job_id)
    except ConfigurationError as exc:
        raise PayloadError(f"field 'id' is not a job id: {job_id[:80]!r}") from exc
    return job_id


def decode_fields(fields: Mapping[bytes, bytes], *, max_bytes: int = DEFAULT_MAX_BYTES) -> Envelope:
    """Read a stream entry into an Envelope, or raise PayloadError saying what is wrong.

    The size rule is the producer's (task name and arguments <= ``max_bytes``), and the
    whole entry may be at most ENTRY_OVERHEAD larger. Runs once per job in the worker, so
    the common case (version 1, no history, no id) takes the short way through.
    """
    get = fields.get
    raw_task, raw_args, raw_kwargs = get(b"task"), get(b"args"), get(b"kwargs")
    raw_at = get(b"enqueued_at")
    # The common entry is these four fields alone: their size is checked below (the
    # arguments) and at enqueued_at (an integer), so only other entries are summed.
    if len(fields) != 4 or raw_task is None or raw_args is None or raw_kwargs is None or not raw_at:
        size = sum(map(len, fields.values())) + sum(map(len, fields))
        if size > max_bytes + ENTRY_OVERHEAD:
            raise PayloadError(
                f"entry is {size} bytes, over the {max_bytes + ENTRY_OVERHEAD}-byte limit "
                f"({max_bytes} for the task name and arguments, {ENTRY_OVERHEAD} for the rest)"
            )
    raw = get(b"version")
    version = VERSION if raw is None or raw == _VERSION_BYTES else _int(fields, "version", VERSION)
    if version != VERSION:
        raise PayloadError(f"unsupported envelope version {version} (this worker reads {VERSION})")
    if raw_task is None or raw_args is None or raw_kwargs is None:
        for name in REQUIRED:
            if name.encode() not in fields:
                raise PayloadError(f"missing field {name!r}")
    assert raw_task is not None and raw_args is not None and raw_kwargs is not None
    try:
        task = raw_task.decode()
    except UnicodeDecodeError as exc:
        raise PayloadError("field 'task' is not valid UTF-8") from exc
    _check_size(task, len(raw_task) + len(raw_args) + len(raw_kwargs), max_bytes)
    try:
        args = _args_decode(raw_args)
    except _DECODE_ERRORS as exc:
        raise PayloadError(f"field 'args' is not a JSON array: {exc}") from exc
    if raw_kwargs == b"{}":
        kwargs: dict[str, Any] = {}
    else:
        try:
            kwargs = _kwargs_decode(raw_kwargs)
        except _DECODE_ERRORS as exc:
            raise PayloadError(f"field 'kwargs' is not a JSON object: {exc}") from exc
    if len(raw_args) >= _DEPTH_BYTES:
        _check_depth(raw_args, args)
    if len(raw_kwargs) >= _DEPTH_BYTES:
        _check_depth(raw_kwargs, kwargs)
    history: list[dict[str, Any]] = []
    if b"history" in fields:
        history = _json_field(fields, "history", _history_decode, "a JSON array of objects")
    job_id = _job_id(fields) if b"id" in fields else None
    raw = get(b"attempt")
    attempt = 1 if raw is None or raw == b"1" else _int(fields, "attempt", 1)
    if attempt < 1:
        raise PayloadError(f"field 'attempt' must be >= 1, not {attempt}")
    return Envelope(
        task=task,
        args=args,
        kwargs=kwargs,
        id=job_id,
        enqueued_at=int(raw_at)
        if raw_at is not None and len(raw_at) <= 20 and raw_at.isdigit()
        else _int(fields, "enqueued_at", 0),
        attempt=attempt,
        history=history,
        version=version,
    )


def _check_depth(raw: bytes, value: Any) -> None:
    """Refuse arguments nested deeper than MAX_DEPTH (cheap unless there are many brackets)."""
    # A bracket past the outer one is looked for first (memchr: fast even through a long
    # prompt), then counted (a byte at a time: 2 us for 2 KiB of text with none).
    if raw.find(b"[", 1) < 0 and raw.find(b"{", 1) < 0:
        return
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


def encode_record(record: JobRecord, result_type: Any = None) -> bytes:
    """The record as stored. A result JSON cannot carry exactly raises PayloadError, unless
    ``result_type`` (the task's return annotation) converts it back (``-> bytes``)."""
    if record.result is not None:
        try:
            raw = encode_json(record.result)
        except PayloadError as exc:
            raise PayloadError(str(exc).replace("value is not", "task result is not")) from exc
        check_result(record.result, raw, result_type)
        record = msgspec.structs.replace(record, result=msgspec.Raw(raw))
    return _record_encode(record)


def decode_record(data: bytes) -> JobRecord:
    return _record_decode(data)
