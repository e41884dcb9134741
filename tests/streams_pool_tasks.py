"""A function the streams tests run in the process pool (a spawned child imports it by name)."""

from __future__ import annotations

from conveyor import current_job


def emits() -> None:
    """emit() in a subprocess, which has no Redis connection: a clear ConfigurationError."""
    current_job().emit("never stored")
