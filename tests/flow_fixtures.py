"""Fixtures shared by the flow-control tests: real worker processes of the flow app, the
app itself bound to the test's namespace, and a ledger file outside Redis."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conveyor import Conveyor
from tests import test_flow_tasks as flow
from tests.test_reliability import Spawn, WorkerProc

APP = "tests.test_flow_tasks:app"


@pytest.fixture
def spawn(redis_url: str, namespace: str, tmp_path: Path) -> Iterator[Spawn]:
    """Real worker processes of the flow app; killed at the end, their logs shown on
    failure."""
    started: list[WorkerProc] = []

    def start(**options: Any) -> WorkerProc:
        log = tmp_path / f"worker-{len(started)}.log"
        w = WorkerProc(redis_url, namespace, log, app=APP, **options)
        started.append(w)
        return w

    try:
        yield start
    finally:
        for w in started:
            w.close()
        for w in started:
            print(f"----- worker pid {w.pid} exit {w.proc.returncode} -----\n{w.log()}")


@pytest.fixture
def flow_app(redis_url: str, namespace: str) -> Iterator[Conveyor]:
    flow.app.rebind(url=redis_url, namespace=namespace)
    yield flow.app
    flow.app.broker.close()


@pytest.fixture
def ledger(tmp_path: Path) -> Path:
    return tmp_path / "ledger.txt"
