"""Task.bind: the worker's argument check, fast paths and the general one agreeing."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from conveyor import Conveyor
from conveyor.errors import PayloadError


def _reference(
    fn: Any, args: list[Any], kwargs: dict[str, Any]
) -> tuple[list[Any], dict[str, Any]]:
    bound = inspect.signature(fn).bind(*args, **kwargs)
    return list(bound.args), dict(bound.kwargs)


CALLS: list[tuple[list[Any], dict[str, Any]]] = [
    ([1, "p", 0.5], {}),
    ([1], {"prompt": "p", "temperature": 0.5}),
    ([], {"x": 1, "prompt": "p", "temperature": 0.5}),
    ([], {"temperature": 0.5, "prompt": "p", "x": 1}),
    ([1, "p"], {"temperature": 0.5}),
    ([1], {"prompt": "p"}),  # temperature from its default
    ([], {"x": 1}),
    ([1], {}),  # both defaults
    ([1, "p"], {}),
    ([], {"x": 1, "temperature": 0.5}),  # prompt skipped: temperature stays by name
]


@pytest.mark.parametrize(("args", "kwargs"), CALLS)
def test_keyword_arguments_bind_as_signature_bind_does(
    app: Conveyor, args: list[Any], kwargs: dict[str, Any]
) -> None:
    async def generate(x: int, prompt: str = "", temperature: float = 1.0) -> None:
        return None

    task = app.task(generate)
    assert task.bind(args, kwargs) == _reference(generate, args, kwargs)


def test_keyword_arguments_are_converted_to_their_annotated_types(app: Conveyor) -> None:
    @app.task
    async def store(key: str, data: bytes, ratio: float) -> None:
        return None

    out, named = store.bind(["k"], {"ratio": 1, "data": "aGk="})
    assert out == ["k", b"hi", 1.0] and named == {}
    assert type(out[2]) is float


@pytest.mark.parametrize(
    ("args", "kwargs", "why"),
    [
        ([1], {"x": 2, "prompt": "p"}, "multiple values"),
        ([1, "p"], {"nope": 0.5}, "unexpected keyword"),
        ([], {"prompt": "p", "temperature": 0.5, "y": 1}, "missing a required argument"),
        ([], {"x": "not a number", "prompt": "p", "temperature": 0.5}, "'x'"),
        (["not a number"], {}, "'x'"),
        ([], {}, "missing a required argument"),
        ([], {"prompt": "p"}, "missing a required argument"),
        ([1, "p", 0.5, 2], {}, "too many positional"),
    ],
)
def test_keyword_arguments_that_do_not_fit_are_refused_with_the_reason(
    app: Conveyor, args: list[Any], kwargs: dict[str, Any], why: str
) -> None:
    @app.task
    async def generate(x: int, prompt: str = "", temperature: float = 1.0) -> None:
        return None

    with pytest.raises(PayloadError, match=why):
        generate.bind(args, kwargs)


def test_a_positional_only_parameter_given_by_name_is_refused(app: Conveyor) -> None:
    @app.task
    async def scale(x: int, /, factor: int) -> None:
        return None

    assert scale.bind([1], {"factor": 2}) == ([1, 2], {})
    with pytest.raises(PayloadError, match="positional only"):
        scale.bind([], {"x": 1, "factor": 2})


def test_keyword_only_and_var_keyword_parameters_bind_as_signature_bind_does(
    app: Conveyor,
) -> None:
    async def tag(x: int, *, label: str, **extra: int) -> None:
        return None

    task = app.task(tag)
    for args, kwargs in (([1], {"label": "a"}), ([1], {"label": "a", "n": 2})):
        assert task.bind(args, kwargs) == _reference(tag, args, kwargs)
