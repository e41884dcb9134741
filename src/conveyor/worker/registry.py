"""Which tasks the live workers of a namespace register, read from the workers registry.

During a rolling deploy old and new workers share a queue; a worker that reads a job for a
task it lacks asks this whether some other live worker could run it. The registry lives in a
hash slot of its own, so it is read here rather than inside the queue's scripts, and cached
briefly: only jobs of unknown tasks ever read it.
"""

from __future__ import annotations

import json
import time
from typing import Any

from ..broker import Broker, command, text
from ..keys import worker_key, workers_key


class LiveTasks:
    def __init__(self, broker: Broker, namespace: str, max_age: float) -> None:
        self.broker = broker
        self.namespace = namespace
        self.max_age = max_age
        self._read_at = -float("inf")
        self._workers: list[dict[str, Any]] = []

    async def registers(self, task: str, queue: str) -> bool:
        """True when some live worker registers ``task`` and serves ``queue``."""
        if time.monotonic() - self._read_at > self.max_age:
            await self._refresh()
        return any(
            task in w.get("tasks", ()) and queue in w.get("queues", ()) for w in self._workers
        )

    async def _refresh(self) -> None:
        names = await self.broker.acall(
            command("ZRANGE", workers_key(self.namespace), 0, -1, parse=_texts)
        )
        infos: list[Any] = []
        if names:
            keys = [worker_key(self.namespace, n) for n in names]
            infos = await self.broker.acall(command("MGET", *keys))
        workers = []
        for raw in infos:
            if raw is None:
                continue  # its info key expired: the worker is gone
            try:
                info = json.loads(raw)
            except ValueError:
                continue
            if isinstance(info, dict):
                workers.append(info)
        self._workers = workers
        self._read_at = time.monotonic()


def _texts(reply: Any) -> list[str]:
    return [text(x) for x in reply or ()]
