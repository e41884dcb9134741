"""A micro-batch task for the crash test: ``python -m tests.workerproc --app
tests.batching_app:app``. Each run of an item is counted in ``<namespace>:runs`` (a hash),
and the first run of a batch holding a ``slow`` item sleeps, so the test can kill it."""

from __future__ import annotations

import time

import redis

from conveyor import Conveyor

app = Conveyor()


@app.task(batch_size=4, batch_wait=0.2, retries=0)
def shout(items: list[str]) -> list[str]:
    client = redis.Redis.from_url(app.url)
    runs = f"{app.namespace}:runs"
    first = [client.hincrby(runs, item, 1) == 1 for item in items]
    if any(item.startswith("slow") for item in items) and all(first):
        time.sleep(30)  # killed here
    return [item.upper() for item in items]
