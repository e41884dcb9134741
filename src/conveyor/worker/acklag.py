"""The ack lag histogram: how long finished jobs wait for their acks to be stored.

A job's lag runs from the end of its function to the reply of the script that stored its
record and acked it; it is what ``job.result()`` waits for beyond the job itself, and what a
crash makes run again. Kept in memory only (no Redis cost per job): log-spaced buckets,
eight per doubling (about 9% apart), from 1 microsecond to beyond a minute.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence

#: When set, a worker appends its histogram to this file as one JSON line when it stops
#: (the benchmark sets it to read every worker process's ack lag; see ``write``).
REPORT_ENV = "CONVEYOR_ACK_LAG_FILE"

#: Buckets per doubling of the lag.
STEPS = 8
BUCKETS = STEPS * 27  # 2**27 us is over two minutes; longer lags land in the last bucket


class AckLag:
    def __init__(self) -> None:
        self.counts = [0] * BUCKETS
        self.count = 0
        self.max_s = 0.0

    def add(self, lags: Sequence[float]) -> None:
        """Record lags in seconds (one batch's worth)."""
        counts, last = self.counts, BUCKETS - 1
        log2 = math.log2
        for lag in lags:
            us = lag * 1e6
            i = int(log2(us) * STEPS) if us > 1.0 else 0
            counts[i if i < last else last] += 1
        self.count += len(lags)
        if lags:
            self.max_s = max(self.max_s, max(lags))

    def percentile(self, p: float) -> float:
        """The lag in seconds that ``p`` percent of acks stayed within (a bucket's upper
        edge, so at most 9% high; never above the largest lag seen); 0.0 before any ack."""
        if not self.count:
            return 0.0
        rank = math.ceil(self.count * p / 100) or 1
        seen = 0
        for i, n in enumerate(self.counts):
            seen += n
            if seen >= rank:
                return min(2 ** ((i + 1) / STEPS) / 1e6, self.max_s)
        return self.max_s

    def summary(self) -> dict[str, float]:
        """Count and p50/p90/p99/max in milliseconds, for logs, the registry and the bench."""
        return {
            "count": self.count,
            "p50_ms": round(self.percentile(50) * 1000, 3),
            "p90_ms": round(self.percentile(90) * 1000, 3),
            "p99_ms": round(self.percentile(99) * 1000, 3),
            "max_ms": round(self.max_s * 1000, 3),
        }

    def to_json(self, consumer: str) -> str:
        """One line: the summary plus the non-empty buckets, so lines can be merged."""
        buckets = {str(i): n for i, n in enumerate(self.counts) if n}
        summary = self.summary()
        return json.dumps(
            {"consumer": consumer, **summary, "buckets": buckets, "max_s": self.max_s}
        )

    @classmethod
    def merged(cls, lines: Iterable[str]) -> AckLag:
        """The histogram of several workers' ``to_json`` lines together."""
        lag = cls()
        for line in lines:
            if not line.strip():
                continue
            data = json.loads(line)
            for i, n in data["buckets"].items():
                lag.counts[int(i)] += n
                lag.count += n
            lag.max_s = max(lag.max_s, float(data["max_s"]))
        return lag


def write(lag: AckLag, consumer: str) -> None:
    """Append this worker's histogram to the file named by CONVEYOR_ACK_LAG_FILE, if set.

    One ``write`` of one line in append mode: worker processes of one run share the file.
    """
    path = os.environ.get(REPORT_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(lag.to_json(consumer) + "\n")
