"""Building workflows: ``chain``, ``group``, ``chord``, and ``|`` between them.

Nothing is sent to Redis until ``enqueue()``; building checks what can be checked without
running anything (each step takes the previous result; a group has members), so a workflow
that cannot work is refused where it is written.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, get_args

from ..errors import ConfigurationError
from ..task import Signature
from . import checks, launch
from .flow import OnError
from .handles import ChainHandle, ChordHandle, GroupHandle


@dataclass(frozen=True)
class Chain:
    """Steps that run one after another: each step's result is the next one's first argument."""

    steps: tuple[Signature, ...]
    #: the first step takes an input first too (a chord's callback chain: the results)
    takes_input: bool = False

    def __post_init__(self) -> None:
        if not self.steps:
            raise ConfigurationError("a chain needs at least one step")
        for s in self.steps:
            if not isinstance(s, Signature):
                raise ConfigurationError(
                    f"a chain's steps are task signatures (task.s(...)), not {s!r}"
                )
            _no_unique(s)
        first = self.steps[0]
        if not self.takes_input:
            try:
                checks.check_binds(first, takes_previous=False, where="chain step 1")
            except ConfigurationError:
                # Missing its first argument: only a chord's callback chain, given the results.
                checks.check_binds(first, takes_previous=True, where="chain step 1")
                object.__setattr__(self, "takes_input", True)
        else:
            checks.check_binds(first, takes_previous=True, where="chain step 1")
        for i in range(1, len(self.steps)):
            checks.check_link(self.steps[i - 1], self.steps[i], f"chain step {i + 1}")

    def __or__(self, other: Signature | Chain) -> Chain:
        return chain(self, other)

    def __ror__(self, other: Signature) -> Chain:
        return chain(other, self)

    def enqueue(self) -> ChainHandle[Any]:
        """Add the first step and return a ChainHandle at once."""
        return launch.chain(self._startable())

    async def enqueue_async(self) -> ChainHandle[Any]:
        return await launch.chain_async(self._startable())

    def _startable(self) -> Chain:
        if self.takes_input:
            checks.check_binds(self.steps[0], takes_previous=False, where="chain step 1")
        return self


@dataclass(frozen=True)
class Group:
    """Jobs that run in parallel; ``group | callback`` (or ``chord``) waits for them all."""

    members: tuple[Signature, ...]

    def __post_init__(self) -> None:
        if not self.members:
            raise ConfigurationError(
                "a group needs at least one member (group() of an empty iterable has "
                "nothing to run, and a chord over it would never call its callback)"
            )
        for i, m in enumerate(self.members):
            if not isinstance(m, Signature):
                raise ConfigurationError(f"a group's members are task.s(...), not {m!r}")
            _no_unique(m)
            checks.check_binds(m, takes_previous=False, where=f"group member {i + 1}")

    def __or__(self, other: Signature | Chain) -> Chord:
        return chord(self, other)

    def enqueue(self) -> GroupHandle:
        """Add every member (one round trip per 500) and return a GroupHandle."""
        return launch.group(self)

    async def enqueue_async(self) -> GroupHandle:
        return await launch.group_async(self)


@dataclass(frozen=True)
class Chord:
    """A group and a callback called once with all member results, in member order."""

    group: Group
    callback: Chain
    on_error: OnError = "fail"

    def __post_init__(self) -> None:
        if self.on_error not in get_args(OnError):
            raise ConfigurationError(f"on_error must be 'fail' or 'include', not {self.on_error!r}")
        checks.check_gather(list(self.group.members), self.callback.steps[0], "chord callback")

    def __or__(self, other: Signature | Chain) -> Chord:
        return Chord(self.group, chain(self.callback, other), self.on_error)

    def enqueue(self) -> ChordHandle[Any]:
        """Open the chord, add its members, and return a ChordHandle at once."""
        return launch.chord(self)

    async def enqueue_async(self) -> ChordHandle[Any]:
        return await launch.chord_async(self)


def chain(*steps: Signature | Chain) -> Chain:
    """``chain(a.s(x), b.s(), c.s())``: b gets a's result first, c gets b's."""
    flat: list[Signature] = []
    for s in steps:
        if isinstance(s, (Group, Chord)):
            raise ConfigurationError(
                "a group or chord can only start a workflow (chord(group, callback) | next.s()); "
                "it cannot follow a step"
            )
        flat.extend(s.steps if isinstance(s, Chain) else (s,))
    first = steps[0] if steps else None
    return Chain(tuple(flat), isinstance(first, Chain) and first.takes_input)


def group(*members: Signature | Iterable[Signature]) -> Group:
    """``group(embed.s(c) for c in chunks)`` or ``group(a.s(), b.s())``."""
    flat: list[Signature] = []
    for m in members:
        if isinstance(m, Signature):
            flat.append(m)
        elif isinstance(m, (Chain, Group, Chord)):
            raise ConfigurationError("a group's members are task.s(...) signatures")
        else:
            flat.extend(m)
    return Group(tuple(flat))


def chord(
    members: Group | Iterable[Signature],
    callback: Signature | Chain,
    *,
    on_error: OnError = "fail",
) -> Chord:
    """Run ``members`` in parallel, then ``callback`` once with the list of their results.

    ``on_error="fail"`` (default): a member that ends without a result (dead after its
    retries, cancelled, expired) leaves the callback unrun; the callback's job is recorded
    dead naming that member, and replaying a dead member (``conveyor dead replay``) lets
    the chord finish. ``"include"``: the callback runs anyway, with ``{"error", "reason",
    "job_id"}`` in that member's place (``reason``: the dead reason, ``cancelled`` or
    ``expired``). Replaying an ``include`` member after its callback was added changes
    nothing in that callback.
    """
    g = members if isinstance(members, Group) else group(members)
    steps = callback.steps if isinstance(callback, Chain) else (callback,)
    return Chord(g, Chain(tuple(steps), takes_input=True), on_error)


def _no_unique(s: Signature) -> None:
    if s.task._unique is not None:
        raise ConfigurationError(
            f"{s.task.name}: unique_key is not supported on a workflow step (each step's id "
            "is already unique: a workflow runs each step once)"
        )
