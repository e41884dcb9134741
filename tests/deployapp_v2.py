"""Version 2 of the rolling-deploy app: ``old_task`` as in version 1, plus ``new_task``."""

from __future__ import annotations

import os

from conveyor import Conveyor

app = Conveyor(namespace=os.environ.get("TEST_NAMESPACE", "deployapp"))


@app.task(retries=0)
def old_task(n: int) -> dict[str, int]:
    return {"n": n, "pid": os.getpid()}


@app.task(retries=0)
def new_task(n: int) -> dict[str, int]:
    return {"n": n, "pid": os.getpid()}
