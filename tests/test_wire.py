"""The job envelope (conveyor.wire): plain stream fields, JSON values, versioned, bounded.

Round trips go through a real Redis stream (XADD then XRANGE) as well as through the pure
functions, so the fields are exactly what `redis-cli XRANGE` shows and what another language
would write.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
import pytest
import redis

from conveyor import PayloadError
from conveyor.wire import (
    ENTRY_OVERHEAD,
    VERSION,
    Envelope,
    JobRecord,
    decode_fields,
    decode_record,
    encode_fields,
    encode_record,
    envelope_fields,
)


def as_redis(fields: Mapping[str, Any]) -> dict[bytes, bytes]:
    """Fields the way a Redis reply carries them: every name and value as bytes."""
    out = {}
    for k, v in fields.items():
        out[k.encode()] = v if isinstance(v, bytes) else str(v).encode()
    return out


def good(**changes: bytes | None) -> dict[bytes, bytes]:
    """A valid entry as Redis returns it; a change of None removes that field."""
    fields = {
        b"version": b"1",
        b"task": b"send_email",
        b"args": b'["a@example.com"]',
        b"kwargs": b'{"subject":"hi"}',
        b"enqueued_at": b"1700000000000",
        b"attempt": b"1",
    }
    for name, value in changes.items():
        if value is None:
            fields.pop(name.encode(), None)
        else:
            fields[name.encode()] = value
    return fields


# -- round trips ---------------------------------------------------------------------------------
def test_encode_decode_round_trip_keeps_every_value() -> None:
    args = [1, 2.5, "é ☃ 😀", None, True, [1, [2, {"x": "y"}]], {"nested": {"k": [1, 2]}}]
    kwargs = {"subject": "hi", "count": 3, "tags": ["a", "b"], "none": None}
    history = [{"attempt": 1, "error": "ValueError: boom", "at": 1700000000001, "worker": "w1"}]
    fields = encode_fields(
        "send_email",
        args,
        kwargs,
        enqueued_at=1700000000000,
        attempt=2,
        job_id="default:d:abc123",
        history=history,
    )
    env = decode_fields(as_redis(fields))
    assert env == Envelope(
        task="send_email",
        args=args,
        kwargs=kwargs,
        id="default:d:abc123",
        enqueued_at=1700000000000,
        attempt=2,
        history=history,
        version=VERSION,
    )


def test_encoded_fields_are_plain_documented_fields() -> None:
    fields = encode_fields("send_email", ["a@example.com"], {"x": 1}, enqueued_at=1700000000000)
    # version 1 and attempt 1 are left out: a reader assumes them when they are missing
    assert list(fields) == ["task", "args", "kwargs", "enqueued_at"]
    again = encode_fields("t", [], {}, enqueued_at=1, attempt=3)
    assert again["attempt"] == 3 and "version" not in again
    assert fields["task"] == "send_email"
    assert msgspec.json.decode(fields["args"]) == ["a@example.com"]  # type: ignore[arg-type]
    assert msgspec.json.decode(fields["kwargs"]) == {"x": 1}  # type: ignore[arg-type]
    assert fields["enqueued_at"] == 1700000000000


def test_round_trip_through_a_real_redis_stream(r: redis.Redis, namespace: str) -> None:
    stream = f"{namespace}:{{default}}:ready:normal"
    fields = encode_fields(
        "resize", ["/tmp/ü.png", 640], {"fast": True}, enqueued_at=1700000000123, job_id="q:d:ff"
    )
    entry_id = r.xadd(stream, fields)  # type: ignore[arg-type]
    [(got_id, raw)] = r.xrange(stream)
    assert got_id == entry_id
    env = decode_fields(raw)
    assert (env.task, env.args, env.kwargs) == ("resize", ["/tmp/ü.png", 640], {"fast": True})
    assert (env.id, env.enqueued_at, env.attempt, env.version) == ("q:d:ff", 1700000000123, 1, 1)


def test_decode_accepts_minimal_entry_written_by_another_language() -> None:
    env = decode_fields({b"task": b"t", b"args": b"[]", b"kwargs": b"{}"})
    assert env == Envelope(task="t", args=[], kwargs={}, id=None, enqueued_at=0, attempt=1)


def test_envelope_fields_changes_attempt_and_history_only() -> None:
    env = decode_fields(good())
    fields = envelope_fields(
        env, attempt=2, id="default:n:1-0", history=[{"attempt": 1, "error": "x"}]
    )
    again = decode_fields(as_redis(fields))
    assert again.attempt == 2
    assert again.id == "default:n:1-0"
    assert again.history == [{"attempt": 1, "error": "x"}]
    assert (again.task, again.args, again.kwargs) == (env.task, env.args, env.kwargs)
    assert again.enqueued_at == env.enqueued_at


# -- decode errors -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("entry", "message"),
    [
        pytest.param(good(task=None), "missing field 'task'", id="missing-task"),
        pytest.param(good(args=None), "missing field 'args'", id="missing-args"),
        pytest.param(good(kwargs=None), "missing field 'kwargs'", id="missing-kwargs"),
        pytest.param(good(args=b'{"a": 1}'), "'args' is not a JSON array", id="args-object"),
        pytest.param(good(args=b'"text"'), "'args' is not a JSON array", id="args-string"),
        pytest.param(good(args=b"[1, 2"), "'args' is not a JSON array", id="args-bad-json"),
        pytest.param(good(kwargs=b"[1, 2]"), "'kwargs' is not a JSON object", id="kwargs-array"),
        pytest.param(good(kwargs=b"null"), "'kwargs' is not a JSON object", id="kwargs-null"),
        pytest.param(good(kwargs=b"{oops"), "'kwargs' is not a JSON object", id="kwargs-bad-json"),
        pytest.param(good(task=b"caf\xc3"), "'task' is not valid UTF-8", id="task-bad-utf8"),
        pytest.param(good(task=b"\xff\xfe"), "'task' is not valid UTF-8", id="task-bad-utf8-2"),
        pytest.param(good(attempt=b"two"), "'attempt' is not an integer", id="attempt-text"),
        pytest.param(good(attempt=b"1.5"), "'attempt' is not an integer", id="attempt-float"),
        pytest.param(good(attempt=b"0"), "'attempt' must be >= 1", id="attempt-zero"),
        pytest.param(good(version=b"2"), "unsupported envelope version 2", id="version-2"),
        pytest.param(good(version=b"0"), "unsupported envelope version 0", id="version-0"),
        pytest.param(good(version=b"v1"), "'version' is not an integer", id="version-text"),
        pytest.param(good(enqueued_at=b"soon"), "'enqueued_at' is not an integer", id="enq-text"),
        pytest.param(good(history=b"{}"), "'history' is not a JSON array", id="history-object"),
    ],
)
def test_decode_rejects_malformed_entry_with_clear_message(
    entry: dict[bytes, bytes], message: str
) -> None:
    with pytest.raises(PayloadError) as info:
        decode_fields(entry)
    assert message in str(info.value)


def test_decode_rejects_invalid_utf8_inside_args_as_payload_error() -> None:
    # Any language may XADD bytes; invalid UTF-8 inside the JSON must be a PayloadError (which
    # the worker dead-letters as malformed), never a bare UnicodeDecodeError.
    with pytest.raises(PayloadError) as info:
        decode_fields(good(args=b'["\xff"]'))
    assert "args" in str(info.value)


def test_decode_rejects_invalid_utf8_inside_kwargs_as_payload_error() -> None:
    with pytest.raises(PayloadError) as info:
        decode_fields(good(kwargs=b'{"a": "\xc3"}'))
    assert "kwargs" in str(info.value)


def test_decode_rejects_oversize_arguments_and_names_the_limit() -> None:
    entry = good(args=b'["' + b"x" * 2000 + b'"]')
    with pytest.raises(PayloadError) as info:
        decode_fields(entry, max_bytes=1000)
    text = str(info.value)
    assert "over the 1000-byte limit" in text
    size = len(entry[b"task"]) + len(entry[b"args"]) + len(entry[b"kwargs"])
    assert str(size) in text


def test_decode_applies_the_producers_size_rule_to_the_same_bytes() -> None:
    # The limit counts the task name and the JSON of the arguments, at enqueue and here; the
    # rest of the entry (names, timestamps, signature, history) does not count against it.
    entry = good()
    size = len(entry[b"task"]) + len(entry[b"args"]) + len(entry[b"kwargs"])
    assert decode_fields(entry, max_bytes=size).task == "send_email"
    with pytest.raises(PayloadError, match="task name and arguments"):
        decode_fields(entry, max_bytes=size - 1)
    fields = encode_fields("send_email", ["a@example.com"], {"subject": "hi"}, enqueued_at=1)
    assert decode_fields(as_redis(fields), max_bytes=size).task == "send_email"
    with pytest.raises(PayloadError):
        encode_fields(
            "send_email", ["a@example.com"], {"subject": "hi"}, enqueued_at=1, max_bytes=size - 1
        )


def test_decode_refuses_an_entry_larger_than_the_limit_plus_the_overhead() -> None:
    history = b'[{"error":"' + b"e" * (ENTRY_OVERHEAD + 1000) + b'"}]'
    with pytest.raises(PayloadError, match="entry is"):
        decode_fields(good(history=history), max_bytes=1000)
    fits = b'[{"error":"' + b"e" * (ENTRY_OVERHEAD - 1000) + b'"}]'
    assert decode_fields(good(history=fits), max_bytes=1000).history[0]["error"].startswith("e")


COMMON = {b"task": b"t", b"args": b"[1]", b"kwargs": b"{}", b"enqueued_at": b"1700000000000"}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        pytest.param(
            {b"enqueued_at": b"9" * 1_000_000}, "'enqueued_at' is not an integer", id="at"
        ),
        pytest.param({b"enqueued_at": b""}, "'enqueued_at' is not an integer", id="empty-at"),
        pytest.param({b"junk": b"j" * 1_000_000}, "entry is", id="fifth-field"),
        pytest.param({b"args": b'["' + b"a" * 1_000_000 + b'"]'}, "bytes of task", id="args"),
    ],
)
def test_decode_bounds_the_common_four_field_entry_too(
    changes: dict[bytes, bytes], message: str
) -> None:
    """The common entry (task, args, kwargs, enqueued_at) is not summed whole, so each of its
    fields must still be bounded; any other entry is summed."""
    assert decode_fields(COMMON).args == [1]
    with pytest.raises(PayloadError, match=message):
        decode_fields({**COMMON, **changes}, max_bytes=10_000)


@pytest.mark.parametrize(
    ("job_id", "message"),
    [
        pytest.param(b"default:d:" + b"a" * 100_000, "bytes long", id="100KB"),
        pytest.param(b"default:n:99999999999999999999-0", "not a job id", id="beyond-64-bits"),
        pytest.param(b"nope", "not a job id", id="garbage"),
        pytest.param(b"default:{x}:1-0", "not a job id", id="brace"),
        pytest.param(b"default:d:\xff", "'id'", id="bad-token"),
    ],
)
def test_decode_refuses_an_id_field_that_is_not_a_short_job_id(job_id: bytes, message: str) -> None:
    # The id becomes part of the record key: a 100 KB id made a 100 KB key.
    with pytest.raises(PayloadError, match=message):
        decode_fields(good(id=job_id))
    assert decode_fields(good(id=b"default:d:abc")).id == "default:d:abc"


# -- encode errors -------------------------------------------------------------------------------
class Opaque:
    pass


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        pytest.param([object()], {}, id="object-arg"),
        pytest.param([Opaque()], {}, id="custom-class-arg"),
        pytest.param([1, {"deep": [Opaque()]}], {}, id="nested-arg"),
        pytest.param([], {"fn": print}, id="function-kwarg"),
        pytest.param([1 + 2j], {}, id="complex-arg"),
    ],
)
def test_encode_rejects_values_that_are_not_json(args: list[Any], kwargs: dict[str, Any]) -> None:
    with pytest.raises(PayloadError) as info:
        encode_fields("t", args, kwargs, enqueued_at=1)
    assert "not JSON-serializable" in str(info.value)


def test_encode_rejects_oversize_arguments_with_advice() -> None:
    with pytest.raises(PayloadError) as info:
        encode_fields("big_task", ["x" * 5000], {}, enqueued_at=1, max_bytes=1000)
    text = str(info.value)
    assert "'big_task'" in text
    assert "1000-byte limit" in text
    assert "pass a reference" in text


def test_encode_counts_kwargs_toward_the_size_limit() -> None:
    with pytest.raises(PayloadError):
        encode_fields("t", [], {"blob": "y" * 5000}, enqueued_at=1, max_bytes=1000)
    fields = encode_fields("t", [], {"blob": "y" * 500}, enqueued_at=1, max_bytes=1000)
    assert decode_fields(as_redis(fields)).kwargs == {"blob": "y" * 500}


# -- job records ---------------------------------------------------------------------------------
def test_job_record_round_trip() -> None:
    rec = JobRecord(
        state="dead",
        attempt=3,
        result={"a": [1, 2]},
        error="ValueError: boom",
        traceback="Traceback ...",
        reason="failed",
        finished_at=1700000000000,
        worker="host-1-abc",
        level="high",
        entry="1700000000000-0",
        due=1700000005000,
        consumer="host-1-abc",
        task="send_email",
    )
    assert decode_record(encode_record(rec)) == rec


def test_job_record_omits_unset_fields() -> None:
    raw = encode_record(JobRecord(state="done", result=5))
    assert msgspec.json.decode(raw) == {"state": "done", "result": 5}


def test_job_record_reads_records_written_by_lua() -> None:
    # The scripts write records with cjson (schedule.lua, promote.lua, requeue.lua).
    rec = decode_record(b'{"state":"queued","level":"high","entry":"1700000000000-3"}')
    assert (rec.state, rec.level, rec.entry) == ("queued", "high", "1700000000000-3")
    assert decode_record(b'{"state":"scheduled"}') == JobRecord(state="scheduled")


def test_job_record_rejects_unserializable_result() -> None:
    with pytest.raises(PayloadError) as info:
        encode_record(JobRecord(state="done", result=Opaque()))
    assert "not JSON-serializable" in str(info.value)
