"""Workflows refused at build time: bad links between steps, empty groups, unknown options."""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator, Iterator, Sequence
from typing import Any

import pytest

from conveyor import ConfigurationError, Conveyor, PayloadError, chain, chord, group


def _app() -> Conveyor:
    app = Conveyor("redis://127.0.0.1:1/0", namespace="build")  # never reached

    @app.task
    def count(text: str) -> int:
        return len(text)

    @app.task
    def shout(text: str) -> str:
        return text.upper()

    @app.task
    def nothing(text: str) -> None:
        return None

    @app.task
    def loose(value, extra=1):  # type: ignore[no-untyped-def]
        return value

    @app.task
    def halve(x: float) -> float:
        return x / 2

    @app.task
    def merge(values: list[int]) -> int:
        return sum(values)

    @app.task
    def not_a_list(value: str) -> str:
        return value

    @app.task
    def pair(a: int, b: int) -> int:
        return a + b

    @app.task
    def maybe(text: str | None) -> str:
        return text or ""

    return app


def test_a_step_whose_first_parameter_cannot_take_the_previous_result_is_refused() -> None:
    t = _app().tasks
    with pytest.raises(
        ConfigurationError, match=r"shout takes text: str first, but count returns int"
    ):
        chain(t["count"].s("abc"), t["shout"].s())
    with pytest.raises(ConfigurationError, match="returns NoneType"):
        t["nothing"].s("x") | t["shout"].s()


def test_links_the_annotations_allow_are_accepted() -> None:
    t = _app().tasks
    chain(t["count"].s("abc"), t["halve"].s())  # int into float
    chain(t["shout"].s("a"), t["loose"].s())  # no annotation
    chain(t["nothing"].s("a"), t["maybe"].s())  # None into str | None
    chain(t["shout"].s("a"), t["maybe"].s())


def test_a_step_that_cannot_take_its_arguments_after_the_result_is_refused() -> None:
    t = _app().tasks
    with pytest.raises(ConfigurationError, match="chain step 2: pair"):
        chain(t["count"].s("abc"), t["pair"].s(1, 2))
    with pytest.raises(ConfigurationError, match="chain step 1: pair"):
        chain(t["pair"].s())
    lacking = chain(t["pair"].s(1))  # fine as a chord's callback, which gets a first argument
    with pytest.raises(ConfigurationError, match="chain step 1: pair"):
        lacking.enqueue()
    chain(t["count"].s("abc"), t["pair"].s(2))


def test_empty_chains_and_groups_are_refused() -> None:
    t = _app().tasks
    with pytest.raises(ConfigurationError, match="at least one step"):
        chain()
    with pytest.raises(ConfigurationError, match="at least one member"):
        group([])
    with pytest.raises(ConfigurationError, match="at least one member"):
        chord([], t["merge"].s())


def test_a_chord_callback_must_take_a_list_of_what_members_return() -> None:
    t = _app().tasks
    members = [t["count"].s("a"), t["count"].s("bb")]
    chord(members, t["merge"].s())
    with pytest.raises(ConfigurationError, match="receives the list"):
        chord(members, t["not_a_list"].s())
    with pytest.raises(ConfigurationError, match="member shout returns str"):
        chord([t["shout"].s("a")], t["merge"].s())
    with pytest.raises(ConfigurationError, match="on_error must be"):
        chord(members, t["merge"].s(), on_error="ignore")  # type: ignore[arg-type]


def test_groups_and_chords_cannot_follow_a_step_and_unique_keys_are_refused() -> None:
    t = _app().tasks
    g = group(t["count"].s("a"))
    with pytest.raises(ConfigurationError, match="can only start a workflow"):
        chain(t["count"].s("a"), g)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="unique_key is not supported"):
        chain(t["count"].using(unique_key="k").s("a"))
    with pytest.raises(ConfigurationError, match="task signatures"):
        chain("count")  # type: ignore[arg-type]


def test_arguments_json_cannot_carry_are_refused_before_anything_is_sent() -> None:
    t = _app().tasks
    c: Any = chain(t["count"].s("a"), t["pair"].s({1, 2}))
    with pytest.raises(PayloadError):
        c.enqueue()


def test_batch_and_generator_steps_are_checked_as_one_job_sees_them() -> None:
    """A batch task takes and returns one item per job; a generator task's result is what
    it returns (an async generator: None), not what it yields."""
    app = Conveyor("redis://127.0.0.1:1/0", namespace="build-batch")

    @app.task
    def words(text: str) -> Generator[str, None, str]:
        yield from text.split()
        return text

    @app.task
    def tokens(text: str) -> Iterator[str]:
        yield from text.split()

    @app.task
    async def live(text: str) -> AsyncIterator[str]:
        yield text

    @app.task(batch_size=8)
    def embed(texts: list[str]) -> list[list[float]]:
        return [[float(len(t))] for t in texts]

    @app.task(batch_size=8)
    def lengths(values: Sequence[int]) -> list[int]:
        return list(values)

    @app.task
    def norm(vector: list[float]) -> float:
        return sum(vector)

    chain(words.s("a b"), embed.s(), norm.s())  # str -> [str] batch -> list[float] -> float
    chain(tokens.s("a b"), embed.s())  # Iterator[str] says nothing of its return value
    with pytest.raises(
        ConfigurationError,
        match=r"lengths takes values: int \(one item of its batch\) first, but words",
    ):
        chain(words.s("a b"), lengths.s())
    with pytest.raises(ConfigurationError, match=r"norm takes vector: list\[float\] first"):
        chain(embed.s("a"), norm.s(), norm.s())
    with pytest.raises(ConfigurationError, match=r"embed takes texts: str \(one item of its"):
        chain(embed.s("a"), embed.s())
    with pytest.raises(
        ConfigurationError,
        match=r"embed takes texts: str \(one item of its batch\) first, but live returns NoneType",
    ):
        chain(live.s("a"), embed.s())
    with pytest.raises(ConfigurationError, match="cannot take its arguments"):
        chain(words.s("a"), embed.s("extra"))  # a batch job carries its one item only
