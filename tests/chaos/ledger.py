"""Append-only ledgers kept on local disk, never in the Redis under test.

Workers write one file each (``worker-<pid>.ledger``)::

    START <seq> <attempt> <pid> <unix time>     the task function began
    DONE <seq> <pid> <unix time>                the task function is about to return

Each line is one ``write()`` on an ``O_APPEND`` descriptor followed by ``fdatasync``, so a
line is on disk before the task returns (and so before its ack is even sent). The producer
writes ``producer.ledger``::

    ENQ <seq> ok|failed|unknown <job id or -> <unix time> <error...>

``ok`` means Redis acknowledged the enqueue; ``failed`` means it certainly did not happen
(connection refused, OOM, server loading); ``unknown`` means the request may or may not
have been applied (the connection broke after it was sent, or a timeout).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

WORKER_GLOB = "worker-*.ledger"
PRODUCER_FILE = "producer.ledger"


class Ledger:
    """One append-only file; ``write`` returns once the line is on disk."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._lock = threading.Lock()

    def write(self, line: str) -> None:
        data = (line + "\n").encode()
        with self._lock:  # one writer at a time keeps lines whole in any case
            os.write(self._fd, data)
            os.fdatasync(self._fd)

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


@dataclass
class Start:
    seq: int
    attempt: int
    pid: int
    at: float


@dataclass
class Done:
    seq: int
    pid: int
    at: float


@dataclass
class Enqueue:
    seq: int
    status: str  # ok | failed | unknown
    job_id: str | None
    at: float
    error: str = ""


@dataclass
class WorkerLedgers:
    """Everything the workers wrote, by sequence number."""

    starts: dict[int, list[Start]] = field(default_factory=lambda: defaultdict(list))
    dones: dict[int, list[Done]] = field(default_factory=lambda: defaultdict(list))
    bad_lines: int = 0

    def all_starts(self) -> Iterable[Start]:
        for items in self.starts.values():
            yield from items

    def all_dones(self) -> Iterable[Done]:
        for items in self.dones.values():
            yield from items


def _lines(path: Path) -> list[str]:
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return []
    lines = text.split("\n")
    return lines[:-1]  # the last element is "" or a line still being written


def read_worker_ledgers(directory: str | os.PathLike[str]) -> WorkerLedgers:
    out = WorkerLedgers()
    for path in sorted(Path(directory).glob(WORKER_GLOB)):
        for line in _lines(path):
            parts = line.split()
            try:
                if parts[0] == "START" and len(parts) == 5:
                    s = Start(int(parts[1]), int(parts[2]), int(parts[3]), float(parts[4]))
                    out.starts[s.seq].append(s)
                elif parts[0] == "DONE" and len(parts) == 4:
                    d = Done(int(parts[1]), int(parts[2]), float(parts[3]))
                    out.dones[d.seq].append(d)
                elif parts[0] in ("BOOT", "READY", "EXIT"):
                    pass
                else:
                    out.bad_lines += 1
            except (IndexError, ValueError):
                out.bad_lines += 1
    return out


def count_dones(directory: str | os.PathLike[str]) -> set[int]:
    """The sequence numbers with at least one DONE line (cheap progress probe)."""
    seen: set[int] = set()
    for path in Path(directory).glob(WORKER_GLOB):
        for line in _lines(path):
            if line.startswith("DONE "):
                with contextlib.suppress(IndexError, ValueError):
                    seen.add(int(line.split()[1]))
    return seen


def read_producer_ledger(directory: str | os.PathLike[str]) -> dict[int, Enqueue]:
    out: dict[int, Enqueue] = {}
    for line in _lines(Path(directory) / PRODUCER_FILE):
        parts = line.split(" ", 5)
        if len(parts) < 5 or parts[0] != "ENQ":
            continue
        job_id = None if parts[3] == "-" else parts[3]
        out[int(parts[1])] = Enqueue(
            int(parts[1]), parts[2], job_id, float(parts[4]), parts[5] if len(parts) > 5 else ""
        )
    return out
