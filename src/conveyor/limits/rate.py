"""Global rate limits: at most N jobs of a task (per key) start per period, on all workers.

Checked by the gate (gate.py, limit_gate.lua) with GCRA on Redis' clock: an admitted job
costs the gate's one script call; a limited one is parked in the delayed set at a slot
reserved for it and, when promoted, passes the gate again without consuming another slot.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..keys import QueueKeys
from .policy import Rate, key_part, parse_rate, positive_int

#: How long a reservation whose job never came back (cancelled, replayed elsewhere), and an
#: idle limiter, are kept: long past any promotion delay, short enough not to pile up.
KEEP_MS = 3_600_000


def rate_key(keys: QueueKeys, task: str, key: object = None) -> str:
    """``ns:{queue}:rate:<task>`` or ``...:rate:<task>:<key>``: one limiter per key."""
    base = f"{keys.prefix}rate:{key_part(task, 'task name')}"
    return base if key is None else f"{base}:{key_part(key, 'rate_key')}"


@dataclass(frozen=True)
class RateLimit:
    """A task's ``rate=`` option, validated when the task is declared.

    ``burst`` jobs may start back to back after a quiet spell (1: evenly spaced).
    """

    rate: Rate
    burst: int = 1
    keep_ms: int = field(default=KEEP_MS, repr=False)

    @classmethod
    def parse(cls, text: object, burst: object = 1) -> RateLimit:
        return cls(parse_rate(text, "rate"), positive_int(burst, "rate_burst"))
