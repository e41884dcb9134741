"""The calls that move workflows on: a chain's next step, a chord's results, its callback.

complete.lua adds a step or reports to a chord in the same step as the ack when the next job
lives on the same queue (``handoff_args`` builds its arguments); across queues the forward
scripts run first (forward_step.lua, chord_report.lua), and the scripts that end a job
without a result tell its chord through ``member_tail``.
"""

from __future__ import annotations

from dataclasses import dataclass

from .calls import Arg, Call, run_script


@dataclass(frozen=True, slots=True)
class NextStep:
    """A workflow's next job, added by the ack of the step before it (complete.lua) or
    forwarded ahead of that ack to another queue (forward_step.lua)."""

    stream: str
    record: str
    level: str
    fields: tuple[Arg, ...]  # field, value, field, value...


@dataclass(frozen=True, slots=True)
class ChordReport:
    """A chord member's result (JSON) for its slot in the chord's hash; the last one in adds
    the callback (stream, record, level)."""

    chord: str
    index: int
    value: bytes
    size: int
    callback_stream: str
    callback_record: str
    callback_level: str
    #: ``value`` is the error a member that ended without a result stands for (kept apart:
    #: a later result replaces it until the callback has been added)
    error: bool = False


@dataclass(frozen=True, slots=True)
class MemberEnd:
    """A chord member ending without a result (dead, cancelled, expired), told to its chord
    on the same queue by the script that ends it, once that script found the worker still
    owns the entry (member_end in lua/includes/workflow.lua). ``value`` is the error JSON
    (on_error="include") or the callback's dead record (``fail``, kept ``ttl_ms``)."""

    chord: str
    callback_stream: str
    callback_record: str
    callback_level: str
    on_error: str
    index: int
    size: int
    value: bytes
    ttl_ms: int

    def keys(self) -> list[str]:
        return [self.chord, self.callback_stream, self.callback_record]

    def args(self, first_key: int) -> list[Arg]:
        """The script's 7 tail arguments, the chord's keys starting at KEYS[first_key]."""
        return [
            first_key,
            self.on_error,
            self.index,
            self.size,
            self.value,
            self.callback_level,
            self.ttl_ms,
        ]


#: The tail of an ending script for a job that is no chord member on that queue.
NO_MEMBER: tuple[Arg, ...] = (0, "", 0, 0, "", "", 0)


def member_tail(member: MemberEnd | None, key_list: list[str]) -> list[Arg]:
    """The chord tail of dead/end_cancelled/expire; appends the chord's keys to
    ``key_list`` (after every other key, so optional keys before keep their place)."""
    if member is None:
        return list(NO_MEMBER)
    first = len(key_list) + 1
    key_list += member.keys()
    return member.args(first)


@dataclass(frozen=True, slots=True)
class DropChord:
    """A chord's hash, deleted by the ack of its callback."""

    chord: str


Handoff = NextStep | ChordReport | DropChord


def handoff_args(j: int, h: Handoff, key_list: list[str]) -> list[Arg]:
    """complete.lua's arguments for one handoff of the ``j``-th job; its keys join KEYS."""

    def key(name: str) -> int:
        key_list.append(name)
        return len(key_list)

    if isinstance(h, NextStep):
        return [j, "step", key(h.stream), key(h.record), h.level, len(h.fields), *h.fields]
    if isinstance(h, ChordReport):
        return [
            j,
            "chord",
            key(h.chord),
            h.index,
            h.value,
            h.size,
            key(h.callback_stream),
            key(h.callback_record),
            h.callback_level,
        ]
    return [j, "drop", key(h.chord)]


def forward_step(marker: str, step: NextStep, ttl_ms: int) -> Call[bool]:
    """Add a chain's next step to another queue, once per marker (forward-then-ack)."""
    return run_script(
        "forward_step",
        [marker, step.stream, step.record],
        [ttl_ms, step.level, *step.fields],
        lambda r: bool(int(r)),
    )


def chord_report(report: ChordReport) -> Call[int]:
    """Report a member's result to a chord on another queue (forward-then-ack)."""
    return run_script(
        "chord_report",
        [report.chord, report.callback_stream, report.callback_record],
        [report.index, report.value, report.size, report.callback_level, int(report.error)],
        int,
    )


def chord_open(chord: str, callback_fields: bytes, ttl_ms: int) -> Call[int]:
    return run_script("chord_open", [chord], [callback_fields, ttl_ms], int)


def chord_failed(
    chord: str,
    index: int,
    callback_record: str,
    record: bytes,
    ttl_ms: int,
    channel: str,
    publish: str = "PUBLISH",
) -> Call[bool]:
    """Record a chord's callback dead because member ``index`` died (on_error="fail")."""
    return run_script(
        "chord_failed",
        [chord, callback_record],
        [index, record, ttl_ms, channel, publish],
        lambda r: bool(int(r)),
    )
