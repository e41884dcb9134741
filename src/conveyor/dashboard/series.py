"""The overview's live charts: throughput and queue wait of each queue over the last minutes.

Samples are taken from what Redis already counts, when the overview polls (at most one a
second), and kept in this process for ``WINDOW_S``: throughput is the rise of the consumer
groups' ``entries-read`` less the rise of their pending entries (jobs finished), and queue
wait is the age of each queue's oldest undelivered entry (Sidekiq's "latency"). Nothing is
written to Redis; the charts start when the dashboard does. The drawing is pure: points in,
SVG polyline coordinates out.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from dataclasses import dataclass

from ..stats import QueueStats

#: How much history the charts keep, and the least time between two samples.
WINDOW_S = 300.0
MIN_INTERVAL_S = 1.0


@dataclass(frozen=True)
class Sample:
    at: float  # monotonic seconds
    finished: int | None  # entries read minus pending, summed over levels (None before Redis 7)
    wait_s: float  # age of the oldest waiting job; 0 when none waits


@dataclass(frozen=True)
class Point:
    at: float
    value: float


def finished_count(stats: QueueStats) -> int | None:
    reads = [lv.entries_read for lv in stats.levels]
    if any(r is None for r in reads):
        return None
    return sum(r for r in reads if r is not None) - stats.running


def oldest_wait_s(now_ms: int, oldest_entry_ids: list[str | None]) -> float:
    """Seconds since the oldest of these waiting entries was added (0 when none waits)."""
    added = [int(e.split("-", 1)[0]) for e in oldest_entry_ids if e]
    return max(0.0, (now_ms - min(added)) / 1000) if added else 0.0


class Series:
    """Per queue, the samples of the last ``WINDOW_S`` seconds (thread-safe: routes run in
    Starlette's thread pool)."""

    def __init__(self, window_s: float = WINDOW_S, min_interval_s: float = MIN_INTERVAL_S) -> None:
        self.window_s = window_s
        self.min_interval_s = min_interval_s
        self._samples: dict[str, deque[Sample]] = {}
        self._last = -float("inf")
        self._lock = threading.Lock()

    def due(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        with self._lock:
            return now - self._last >= self.min_interval_s

    def add(self, samples: dict[str, Sample]) -> None:
        with self._lock:
            self._last = max(s.at for s in samples.values()) if samples else time.monotonic()
            for queue, sample in samples.items():
                kept = self._samples.setdefault(queue, deque())
                kept.append(sample)
                while kept and sample.at - kept[0].at > self.window_s:
                    kept.popleft()

    def span(self, now: float, least: float = 60.0) -> float:
        """Seconds the charts show: the time since the oldest kept sample, at least
        ``least`` and at most the window, so a young dashboard's charts are not a sliver."""
        with self._lock:
            starts = [kept[0].at for kept in self._samples.values() if kept]
        oldest = min(starts, default=now)
        return max(least, min(self.window_s, now - oldest))

    def throughput(self, queue: str) -> list[Point]:
        """Jobs finished per second between consecutive samples."""
        with self._lock:
            kept = list(self._samples.get(queue, ()))
        points = []
        for before, after in itertools.pairwise(kept):
            if before.finished is None or after.finished is None or after.at <= before.at:
                continue
            # A group recreated (or a stream deleted) restarts its count: never below zero.
            rise = max(0, after.finished - before.finished)
            points.append(Point(after.at, rise / (after.at - before.at)))
        return points

    def wait(self, queue: str) -> list[Point]:
        with self._lock:
            return [Point(s.at, s.wait_s) for s in self._samples.get(queue, ())]


@dataclass(frozen=True)
class Line:
    queue: str
    points: str  # SVG polyline "x,y x,y ..."
    latest: float


def polylines(
    series: dict[str, list[Point]], now: float, window_s: float, width: int, height: int
) -> tuple[list[Line], float]:
    """Each queue's points scaled into a ``width`` x ``height`` box (time on x, the last
    ``window_s`` seconds; y from 0 to the highest value), and that highest value."""
    top = max((p.value for pts in series.values() for p in pts), default=0.0)
    scale = top if top > 0 else 1.0
    lines = []
    for queue, pts in series.items():
        coords = []
        for p in pts:
            x = width * (1 - (now - p.at) / window_s)
            if x < 0:
                continue
            y = height * (1 - p.value / scale)
            coords.append(f"{x:.1f},{y:.1f}")
        lines.append(Line(queue, " ".join(coords), pts[-1].value if pts else 0.0))
    return lines, top
