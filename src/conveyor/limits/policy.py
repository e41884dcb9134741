"""Pure policy of the limits: parsing the options, naming limiter keys, and the GCRA step.

No I/O here, so each rule is unit-tested without Redis. ``gcra_step`` is the arithmetic
rate_limit.lua runs on Redis' clock, kept beside it as the executable specification.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from typing import Final, Literal

from ..errors import ConfigurationError

_UNITS_MS: Final = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_RATE: Final = re.compile(r"\s*(\d+)\s*/\s*(\d*)\s*(ms|s|m|h|d)\s*")
_SAFE_PART: Final = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


@dataclass(frozen=True)
class Rate:
    """``count`` jobs per ``period_ms`` milliseconds."""

    count: int
    period_ms: int

    @property
    def interval_ms(self) -> float:
        """Time between two jobs at a steady rate (GCRA's emission interval)."""
        return self.period_ms / self.count


def parse_rate(text: object, option: str = "rate") -> Rate:
    """Read ``"100/s"``, ``"20/m"``, ``"5/h"``, ``"1/d"``, ``"100/2s"``, ``"3/500ms"``."""
    match = _RATE.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ConfigurationError(
            f"{option}={text!r} is not a rate: write COUNT/PERIOD such as '100/s', '20/m', "
            "'5/h' or '100/2s' (units ms, s, m, h, d)"
        )
    count, multiple, unit = int(match[1]), int(match[2] or 1), match[3]
    if count < 1 or multiple < 1:
        raise ConfigurationError(
            f"{option}={text!r} allows no job at all: count and period must be at least 1 "
            "(to stop a task, do not enqueue it)"
        )
    return Rate(count, multiple * _UNITS_MS[unit])


def positive_int(value: object, option: str) -> int:
    """An option that must be a whole number >= 1 (``concurrency``, ``burst``)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{option}={value!r}: must be a whole number of at least 1")
    return value


def key_part(value: object, option: str) -> str:
    """A task name or limit key as a safe piece of a Redis key.

    Short plain names are kept readable; anything longer or holding other characters
    (braces, ':', globs, spaces) becomes '#' plus a hash, which no plain name can collide
    with, so a user key can neither break the hash tag nor grow a key without bound.
    """
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ConfigurationError(
            f"{option} must give a str or int, not {type(value).__name__} ({value!r:.60})"
        )
    text = str(value)
    if _SAFE_PART.fullmatch(text):
        return text
    return "#" + hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Step:
    """What GCRA decides for one job: run now, or wait until ``at_ms``; and the new TAT."""

    decision: Literal["run", "wait"]
    at_ms: int
    tat_ms: float


def gcra_step(now_ms: float, tat_ms: float | None, interval_ms: float, burst: int) -> Step:
    """One GCRA decision with slot reservation (what rate_limit.lua does for a new job).

    Every job consumes one emission interval; a job that may not run yet is given the first
    whole millisecond it conforms at, ``tat - (burst - 1) * interval``, and the TAT moves
    past it, so the next job is given the slot after. ``now_ms`` is fractional (Redis'
    TIME has microseconds), so rates above 1000/s are not rounded down to one job per ms.
    """
    tat = max(tat_ms if tat_ms is not None else now_ms, now_ms)
    allowed_at = tat - (burst - 1) * interval_ms
    if allowed_at <= now_ms:
        return Step("run", math.floor(now_ms), tat + interval_ms)
    return Step("wait", math.ceil(allowed_at), tat + interval_ms)
