"""Retry delays: exponential growth with full jitter (a pure policy, tested without Redis).

Full jitter spreads a burst of failures over the whole window, so a dependency that comes
back is not hit by every retry at once.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from .errors import ConfigurationError


@dataclass(frozen=True)
class Backoff:
    base: float = 1.0
    cap: float = 300.0
    jitter: bool = True

    def __post_init__(self) -> None:
        if not math.isfinite(self.base) or self.base <= 0:
            raise ConfigurationError(f"Backoff.base must be a finite number > 0, not {self.base}")
        if not math.isfinite(self.cap):
            raise ConfigurationError(f"Backoff.cap must be a finite number, not {self.cap}")
        if self.cap < self.base:
            raise ConfigurationError(f"Backoff.cap ({self.cap}) must be >= base ({self.base})")

    def ceiling(self, failures: int) -> float:
        """Upper bound of the delay after the n-th failure (1-based)."""
        exponent = min(max(failures - 1, 0), 62)
        return min(self.cap, self.base * (2.0**exponent))

    def delay(self, failures: int, rng: random.Random | None = None) -> float:
        ceiling = self.ceiling(failures)
        if not self.jitter:
            return ceiling
        return (rng or random).uniform(0.0, ceiling)
