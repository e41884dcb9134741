"""Version 1 of an app for the rolling-deploy tests: it knows only ``old_task``.

Run with ``python -m tests.workerproc --app tests.deployapp_v1:app``.
"""

from __future__ import annotations

import os

from conveyor import Conveyor

app = Conveyor(namespace=os.environ.get("TEST_NAMESPACE", "deployapp"))


@app.task(retries=0)
def old_task(n: int) -> dict[str, int]:
    return {"n": n, "pid": os.getpid()}
