"""A `conveyor worker` process sets its garbage collector for a worker (worker/gc_tuning.py);
a worker embedded in another program leaves that program's collector alone."""

from __future__ import annotations

import gc
import json
import subprocess
import sys

from conveyor import Conveyor
from conveyor.worker.gc_tuning import YOUNG_THRESHOLD
from tests.conftest import fast, worker_thread

SERVE = """
import gc, json, sys
from conveyor import Conveyor, WorkerSettings
from conveyor.worker import serve
app = Conveyor(sys.argv[1], namespace=sys.argv[2])
@app.task
def noop() -> None:
    return None
before = gc.get_threshold()[0]
serve(app, WorkerSettings(burst=True, block_ms=100))
after, frozen = gc.get_threshold()[0], gc.get_freeze_count()
print(json.dumps({"before": before, "after": after, "frozen": frozen}))
"""


def test_serve_freezes_start_up_objects_and_makes_young_collections_rare(
    redis_url: str, namespace: str
) -> None:
    out = subprocess.run(
        [sys.executable, "-c", SERVE, redis_url, namespace],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["before"] < YOUNG_THRESHOLD  # CPython's default
    assert seen["after"] == YOUNG_THRESHOLD
    assert seen["frozen"] > 1000  # the app and its imports, out of every later collection


def test_an_embedded_worker_leaves_the_collector_alone(app: Conveyor) -> None:
    @app.task
    def noop() -> None:
        return None

    threshold = gc.get_threshold()
    with worker_thread(app, fast()):
        noop.enqueue().result(timeout=10)
    assert gc.get_threshold() == threshold
