"""The app of the worker-configuration tests: ``tests.workercfg_app:app``.

Its code names a Redis URL (WORKERCFG_CODE_URL: the "explicit code" layer of the URL's
precedence) and worker defaults (the "app defaults" layer of the settings' precedence); its
namespace is TEST_NAMESPACE. Every run of ``record`` appends ``n:pid`` to a ledger list
outside the jobs' own state, so a test sees each job's runs and which process ran them.
"""

from __future__ import annotations

import os
import time

from conveyor import Backoff, Conveyor, Leases, Retention, WorkerSettings

NAMESPACE = os.environ.get("TEST_NAMESPACE", "workercfg")
#: what the app's code sets; each field differs from its built-in default
DEFAULTS = WorkerSettings(
    concurrency=4,
    shutdown_grace=7.0,
    leases=Leases(timeout=12.0),
    retention=Retention(keep_count=500),
    block_ms=100,
    promote_every=0.05,
)

app = Conveyor(os.environ.get("WORKERCFG_CODE_URL") or None, namespace=NAMESPACE, worker=DEFAULTS)
#: held by ``grow`` so that its process's memory stays up
_ballast: list[bytes] = []


def ledger_key(namespace: str) -> str:
    return f"{namespace}:ledger"


def _note(n: int) -> int:
    app.broker.client.rpush(ledger_key(app.namespace), f"{n}:{os.getpid()}")
    return os.getpid()


@app.task
def record(n: int) -> int:
    return _note(n)


@app.task(retries=1, backoff=Backoff(base=0.3, cap=0.3, jitter=False))
def fails_once(n: int) -> int:
    """Fails its first attempt: the retry waits 0.3 s in the delayed set."""
    runs = app.broker.client.rpush(ledger_key(app.namespace) + ":fails_once", n)
    if runs == 1:
        raise RuntimeError("first attempt fails")
    return _note(n)


@app.task
def grow(megabytes: int, hold: float) -> int:
    """Keep ``megabytes`` of memory in this process, then run ``hold`` seconds longer."""
    _ballast.append(b"x" * (megabytes * 2**20))  # written, so resident (not lazy zero pages)
    time.sleep(hold)
    return os.getpid()
