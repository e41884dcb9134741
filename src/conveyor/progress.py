"""Progress a running task reports (``current_job().progress(0.4, "step 2 of 5")``) and
what ``job.progress()`` reads.

One key per job beside its record, replaced on each report and stamped with Redis' clock;
it expires ``ttl_ms`` after the last report (the worker passes the record retention), so it
goes away with the job instead of needing a cleanup.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import msgspec

from .broker import Call, command, run_script
from .errors import ConfigurationError
from .keys import QueueKeys

#: Longest message kept; a progress line is for people, not a data channel.
MAX_MESSAGE = 1000


@dataclass(frozen=True)
class Progress:
    fraction: float
    message: str
    #: when it was reported, Redis ms
    at: int


class _Stored(msgspec.Struct):
    fraction: float
    message: str
    at: int


_decode = msgspec.json.Decoder(_Stored).decode


def validate(fraction: float, message: str) -> tuple[float, str]:
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)):
        raise ConfigurationError(f"progress fraction must be a number, not {fraction!r}")
    if not math.isfinite(fraction) or not 0 <= fraction <= 1:
        raise ConfigurationError(f"progress fraction must be between 0 and 1, not {fraction!r}")
    if not isinstance(message, str):
        raise ConfigurationError(f"progress message must be a str, not {type(message).__name__}")
    return float(fraction), message[:MAX_MESSAGE]


def report(
    keys: QueueKeys, job_id: str, fraction: float, message: str = "", *, ttl_ms: int
) -> Call[int]:
    """Store the latest progress; the reply is the Redis time it was stamped with."""
    value, text = validate(fraction, message)
    if ttl_ms <= 0:
        raise ConfigurationError(f"progress ttl_ms must be positive, not {ttl_ms!r}")
    return run_script("progress", [keys.progress(job_id)], [repr(value), text, ttl_ms], int)


def _parse(reply: Any) -> Progress | None:
    if reply is None:
        return None
    stored = _decode(reply)
    return Progress(stored.fraction, stored.message, stored.at)


def read(keys: QueueKeys, job_id: str) -> Call[Progress | None]:
    """The latest progress, or None when none was reported (or it expired)."""
    return command("GET", keys.progress(job_id), parse=_parse)
