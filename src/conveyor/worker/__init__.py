"""The worker: a supervisor of processes, each a runtime of slots around an executor."""

from ..errors import WorkerCrashed
from .runtime import Worker, app_queues, consumer_name, run_worker, serve

__all__ = ["Worker", "WorkerCrashed", "app_queues", "consumer_name", "run_worker", "serve"]
