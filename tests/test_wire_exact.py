"""Values do not change silently (issue 8, item 7): what JSON cannot carry exactly is refused
at enqueue, naming the argument, unless the task's annotations say how to convert it back.

JSON turned nan/inf into null, sets into lists, bytes into base64 text and int dict keys into
strings, and no error was raised. Tuples are the one exception kept on purpose: they arrive
as lists, as JSON has it (annotate ``tuple[...]`` to get a tuple back).
"""

from __future__ import annotations

import datetime
import decimal
import enum
import uuid
from typing import Any

import pytest
import redis

from conveyor import Conveyor, PayloadError
from conveyor.wire import JobRecord, decode_record, encode_fields, encode_record
from tests.conftest import worker_thread


class Color(enum.Enum):
    RED = "red"


SILENTLY_CHANGED = [
    pytest.param(float("nan"), id="nan"),
    pytest.param(float("inf"), id="inf"),
    pytest.param(float("-inf"), id="-inf"),
    pytest.param({1, 2}, id="set"),
    pytest.param(frozenset({"a"}), id="frozenset"),
    pytest.param(b"raw", id="bytes"),
    pytest.param(bytearray(b"raw"), id="bytearray"),
    pytest.param({1: "one"}, id="int-key"),
    pytest.param(datetime.datetime(2024, 1, 1), id="datetime"),
    pytest.param(uuid.UUID(int=5), id="uuid"),
    pytest.param(decimal.Decimal("1.5"), id="decimal"),
    pytest.param(Color.RED, id="enum"),
    pytest.param([1, [2, {"deep": float("nan")}]], id="nested-nan"),
    pytest.param({"tags": {"a"}}, id="nested-set"),
]


@pytest.mark.parametrize("value", SILENTLY_CHANGED)
def test_values_json_would_change_are_refused_at_enqueue_naming_the_argument(
    app: Conveyor, r: redis.Redis, namespace: str, value: Any
) -> None:
    @app.task
    def take(first: Any, second: Any = None) -> None: ...

    with pytest.raises(PayloadError, match=r"argument 'second'.*cannot carry exactly"):
        take.enqueue(1, value)
    with pytest.raises(PayloadError, match="argument 'second'"):
        take.enqueue(1, second=value)
    with pytest.raises(PayloadError, match="argument 'first'"):
        take.enqueue_in(5, value)
    with pytest.raises(PayloadError):
        take.enqueue_many([(1,), (value,)])
    assert list(r.scan_iter(match=f"{namespace}:*")) == []


def test_plain_json_values_and_tuples_are_accepted(app: Conveyor) -> None:
    @app.task
    def take(*args: Any, **kwargs: Any) -> None: ...

    take.enqueue("s", 1, 2.5, True, None, [1, (2, 3)], {"k": (4, "x")}, big=2**70, z=-0.0)


@pytest.mark.parametrize(
    ("function_source", "value"),
    [
        ("def f(data: bytes) -> int: return len(data) if type(data) is bytes else -1", b"\x00\xff"),
        ("def f(tags: set[str]) -> int: return len(tags) if type(tags) is set else -1", {"a", "b"}),
        (
            "def f(scores: dict[int, str]) -> int:\n"
            "    return sum(scores) if all(type(k) is int for k in scores) else -1",
            {1: "a", 2: "b"},
        ),
        (
            "def f(when: datetime.date) -> int:\n"
            "    return when.year if type(when) is datetime.date else -1",
            datetime.date(2024, 5, 6),
        ),
        (
            "def f(pair: tuple[int, int]) -> int:\n"
            "    return pair[0] + pair[1] if type(pair) is tuple else -1",
            (2, 3),
        ),
    ],
)
def test_annotated_arguments_are_converted_back_for_the_function(
    app: Conveyor, function_source: str, value: Any
) -> None:
    namespace: dict[str, Any] = {"datetime": datetime}
    exec(function_source, namespace)  # a module-level function, so its hints resolve
    take = app.task(name="f")(namespace["f"])
    job = take.enqueue(value)
    with worker_thread(app):
        assert job.result(timeout=10) not in (-1, None)


def test_an_annotation_that_cannot_convert_the_value_back_is_refused(app: Conveyor) -> None:
    @app.task
    def take(x: float) -> None: ...

    with pytest.raises(PayloadError, match="argument 'x' is nan"):
        take.enqueue(float("nan"))


def test_results_json_would_change_are_refused_unless_the_return_type_converts_them() -> None:
    for value in (float("nan"), {1, 2}, b"x", {1: 2}):
        with pytest.raises(PayloadError, match="task result"):
            encode_record(JobRecord(state="done", result=value))
    raw = encode_record(JobRecord(state="done", result=b"\x00\x01"), bytes)
    assert decode_record(raw).result == "AAE="
    assert encode_record(JobRecord(state="done", result={3, 1}), set[int])
    assert decode_record(encode_record(JobRecord(state="done", result=[1, (2,)]))).result == [
        1,
        [2],
    ]


def test_task_result_type_reads_the_return_annotation(app: Conveyor) -> None:
    @app.task
    def raw() -> bytes:
        return b""

    @app.task
    def plain():  # type: ignore[no-untyped-def]
        return 1

    assert raw.result_type is bytes
    assert plain.result_type is None


def test_encode_fields_names_positions_without_hints() -> None:
    with pytest.raises(PayloadError, match="argument #2 is set"):
        encode_fields("t", [1, {2}], {}, enqueued_at=1)
