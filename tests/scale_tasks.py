"""A worker app for the SIGKILL tests on Cluster and Sentinel: ``tests.scale_tasks:app``.

The tests run it as a real ``conveyor --url ... --namespace ... worker`` process and kill it,
so what ran is counted outside Redis: ``ledger`` appends ``START <n> <pid>`` and
``DONE <n> <pid>`` lines to the file named by SCALE_LEDGER (one short O_APPEND write per line,
so lines from concurrent jobs and processes do not interleave). While the file named by
SCALE_HOLD exists a started job waits, so a test can kill a worker holding known jobs.
Tests call :func:`register_tasks` on their own app to enqueue the same task.
"""

from __future__ import annotations

import os
import time
from typing import Any

from conveyor import Conveyor


def _append(line: str) -> None:
    fd = os.open(os.environ["SCALE_LEDGER"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{line}\n".encode())
    finally:
        os.close(fd)


def register_tasks(app: Conveyor) -> Any:
    """Register ``ledger`` on ``app`` and return it."""

    @app.task(retries=0)
    def ledger(n: int) -> int:
        """Record the start, wait while the hold file exists, record the end; returns ``n``."""
        _append(f"START {n} {os.getpid()}")
        hold = os.environ.get("SCALE_HOLD", "")
        while hold and os.path.exists(hold):  # a sync task: runs in a thread
            time.sleep(0.02)
        _append(f"DONE {n} {os.getpid()}")
        return n

    return ledger


#: URL and namespace come from the command line (``--url``, ``--namespace``).
app = Conveyor(namespace=os.environ.get("TEST_NAMESPACE", "scale"))
ledger = register_tasks(app)
