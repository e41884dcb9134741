"""Property-based tests of the wire format (Hypothesis).

Any stream entry, of any field names and bytes, either decodes into an Envelope or raises
PayloadError with a reason: a worker reading whatever some process XADDed never meets
another exception. And every JSON value the encoder accepts comes back equal.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conveyor import PayloadError
from conveyor.wire import Envelope, decode_fields, encode_fields

FIELD_NAMES = [b"version", b"task", b"args", b"kwargs", b"enqueued_at", b"attempt", b"id"]
FIELD_NAMES += [b"history", b"sig"]

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=25,
)
json_args = st.lists(json_values, max_size=6)
json_kwargs = st.dictionaries(st.text(), json_values, max_size=6)
history = st.lists(st.dictionaries(st.text(), json_values, max_size=4), max_size=4)
job_ids = st.one_of(
    st.none(),
    st.builds(lambda t: f"default:d:{t}", st.from_regex(r"[A-Za-z0-9_\-]{1,64}", fullmatch=True)),
    st.builds(
        lambda ms, seq, code: f"q.1:{code}:{ms}-{seq}",
        st.integers(0, 2**64 - 1),
        st.integers(0, 2**64 - 1),
        st.sampled_from("hnl"),
    ),
)


def as_redis(fields: dict[str, Any]) -> dict[bytes, bytes]:
    return {k.encode(): v if isinstance(v, bytes) else str(v).encode() for k, v in fields.items()}


def decodes_or_says_why(entry: dict[bytes, bytes]) -> None:
    try:
        env = decode_fields(entry)
    except PayloadError as exc:
        assert str(exc), "a PayloadError must say what is wrong"
    else:
        assert isinstance(env, Envelope)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(
        st.sampled_from(FIELD_NAMES) | st.binary(max_size=12), st.binary(max_size=64), max_size=10
    )
)
def test_any_entry_decodes_or_raises_payload_error(entry: dict[bytes, bytes]) -> None:
    decodes_or_says_why(entry)


valid_entries = st.builds(
    lambda task, a, kw, job_id, hist, attempt: as_redis(
        encode_fields(task, a, kw, enqueued_at=1, attempt=attempt, job_id=job_id, history=hist)
    ),
    st.from_regex(r"[A-Za-z0-9_.\-]{1,20}", fullmatch=True),
    json_args,
    json_kwargs,
    job_ids,
    history,
    st.integers(1, 10),
)


@st.composite
def near_valid_entries(draw: st.DrawFn) -> dict[bytes, bytes]:
    """A valid entry with one field dropped, replaced, cut, spliced or added."""
    entry = dict(draw(valid_entries))
    name = draw(st.sampled_from([*sorted(entry), b"id", b"history"]))
    value = entry.get(name, b"")
    action = draw(st.sampled_from(["drop", "replace", "cut", "splice", "add"]))
    if action == "drop":
        entry.pop(name, None)
    elif action == "replace":
        entry[name] = draw(
            st.binary(max_size=40)
            | st.sampled_from(
                [b"", b"-1", b"0", b"99999999999999999999999", b"null", b"[]", b"{}", b"\xff"]
            )
        )
    elif action == "cut":
        entry[name] = value[: draw(st.integers(0, max(0, len(value) - 1)))]
    elif action == "splice":
        at = draw(st.integers(0, len(value)))
        entry[name] = value[:at] + draw(st.binary(min_size=1, max_size=4)) + value[at:]
    else:
        entry[draw(st.binary(min_size=1, max_size=8))] = draw(st.binary(max_size=16))
    return entry


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(near_valid_entries())
def test_near_valid_entries_decode_or_raise_payload_error(entry: dict[bytes, bytes]) -> None:
    decodes_or_says_why(entry)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(json_args, json_kwargs, history, job_ids, st.integers(1, 2**31))
def test_encode_decode_round_trips_every_json_value_it_accepts(
    args: list[Any],
    kwargs: dict[str, Any],
    hist: list[dict[str, Any]],
    job_id: str | None,
    attempt: int,
) -> None:
    try:
        fields = encode_fields(
            "task", args, kwargs, enqueued_at=7, attempt=attempt, job_id=job_id, history=hist
        )
    except PayloadError:
        return  # refused values are the subject of test_wire_exact; here: accepted ones
    env = decode_fields(as_redis(fields))
    assert (env.args, env.kwargs, env.history) == (args, kwargs, hist)
    assert (env.id, env.attempt, env.enqueued_at, env.task) == (job_id, attempt, 7, "task")


@given(json_args, json_kwargs)
def test_json_values_are_never_refused_as_inexact(args: list[Any], kwargs: dict[str, Any]) -> None:
    # The exactness check must not refuse a value JSON carries exactly.
    encode_fields("task", args, kwargs, enqueued_at=1)
