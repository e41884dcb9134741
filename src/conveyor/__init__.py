"""Conveyor: a reliable, fast task queue on Redis Streams."""

from .app import Conveyor
from .backoff import Backoff
from .context import JobContext, current_job
from .errors import (
    ConfigurationError,
    ConnectionFailed,
    ConveyorError,
    EnqueueRejected,
    JobFailed,
    JobNotFound,
    JobTimeout,
    PayloadError,
    TaskNotFound,
    TaskTimeout,
    UnsupportedServer,
)
from .job import Job, JobInfo, JobState
from .settings import Leases, Retention, TaskOptions, WorkerSettings
from .task import Signature, Task

__all__ = [
    "Backoff",
    "ConfigurationError",
    "ConnectionFailed",
    "Conveyor",
    "ConveyorError",
    "EnqueueRejected",
    "Job",
    "JobContext",
    "JobFailed",
    "JobInfo",
    "JobNotFound",
    "JobState",
    "JobTimeout",
    "Leases",
    "PayloadError",
    "Retention",
    "Signature",
    "Task",
    "TaskNotFound",
    "TaskOptions",
    "TaskTimeout",
    "UnsupportedServer",
    "WorkerSettings",
    "current_job",
]
