"""Global flow control of a task across all workers: rate and concurrency limits.

Each limit is a gate the worker calls for a delivery of a limited task before running it:
one Lua script that either lets the job run or parks it in the delayed set without counting
an attempt (see rate.py and concurrency.py for the contracts).
"""

from .admission import Admission
from .concurrency import ConcurrencyLimit, Held, leases_key, release, renew, waiters_key
from .policy import Rate, gcra_step, key_part, parse_rate
from .rate import RateLimit, rate_key

__all__ = [
    "Admission",
    "ConcurrencyLimit",
    "Held",
    "Rate",
    "RateLimit",
    "gcra_step",
    "key_part",
    "leases_key",
    "parse_rate",
    "rate_key",
    "release",
    "renew",
    "waiters_key",
]
