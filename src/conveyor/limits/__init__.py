"""Global flow control of a task across all workers: rate and concurrency limits.

A task with limits passes each delivery through one gate before running it (gate.py): one
Lua script that lets the job run or parks it in the delayed set without counting an
attempt. Concurrency leases are renewed by the lease beat and released when the job ends
(concurrency.py).
"""

from .admission import Admission, Release
from .concurrency import ConcurrencyLimit, Held, leases_key, release, renew, waiters_key
from .gate import Limits
from .policy import Rate, gcra_step, key_part, parse_rate
from .rate import RateLimit, rate_key

__all__ = [
    "Admission",
    "ConcurrencyLimit",
    "Held",
    "Limits",
    "Rate",
    "RateLimit",
    "Release",
    "gcra_step",
    "key_part",
    "leases_key",
    "parse_rate",
    "rate_key",
    "release",
    "renew",
    "waiters_key",
]
