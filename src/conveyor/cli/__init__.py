"""The `conveyor` command: run workers, enqueue, inspect jobs, queues and dead letters.

One module per command group; importing them registers their commands on ``main``.
"""

from __future__ import annotations

from . import cron, dashboard, dead, events, history, jobs, queues, worker
from .base import main

__all__ = ["cron", "dashboard", "dead", "events", "history", "jobs", "main", "queues", "worker"]
