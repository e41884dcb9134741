"""The worker: a supervisor of processes, each a runtime of slots around an executor."""

from .runtime import Worker, run_worker, serve

__all__ = ["Worker", "run_worker", "serve"]
