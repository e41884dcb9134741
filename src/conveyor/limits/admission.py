"""The answer of a limiter gate, shared by the rate and concurrency gates."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from ..broker.calls import text


@dataclass(frozen=True, slots=True)
class Admission:
    """What a gate decided for one delivery.

    ``run``: the job may run now (the delivery is untouched and still this consumer's);
    ``wait``: it was parked in the delayed set until ``at_ms`` (Redis time), its delivery
    acked, no attempt counted; ``lost``: this consumer no longer owns the entry, nothing
    changed, and the worker must drop the job as it does when any transition reports it;
    ``cancelled``: a cancel marked it after its delivery, so it was ended ``cancelled``
    instead of parked (a parked job would lose the mark).
    """

    outcome: Literal["run", "wait", "lost", "cancelled"]
    at_ms: int

    @property
    def run(self) -> bool:
        return self.outcome == "run"


def parse_admission(reply: Any) -> Admission:
    code, at = int(reply[0]), int(reply[1])
    if code == 1:
        return Admission("run", at)
    if code == 0:
        return Admission("wait", at)
    if code == -2:
        return Admission("cancelled", 0)
    return Admission("lost", 0)


@dataclass(frozen=True, slots=True)
class Release:
    """What giving a lease back did: ``released`` (False: none held, or ``foreign``: another
    consumer holds the entry, so the lease was kept for its run) and the waiter woken."""

    released: bool
    woken: str | None = None
    foreign: bool = False


def parse_release(reply: Any) -> Release:
    code, woken = int(reply[0]), text(reply[1])
    return Release(code == 1, woken or None, code == -1)
