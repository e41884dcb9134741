"""Conveyor: a reliable, fast task queue on Redis Streams."""

from .app import Conveyor
from .backoff import Backoff
from .cancellation import CancelOutcome, CancelResult
from .context import JobContext, current_job
from .errors import (
    AuthenticationFailed,
    ConfigurationError,
    ConnectionFailed,
    ConveyorError,
    EnqueueRejected,
    EnqueueUncertain,
    JobCancelled,
    JobExpired,
    JobFailed,
    JobNotFound,
    JobTimeout,
    NotReplicated,
    PayloadError,
    ReplayRefused,
    TaskNotFound,
    TaskTimeout,
    UnsupportedServer,
    WorkerCrashed,
)
from .job import Job, JobInfo, JobState
from .progress import Progress
from .settings import Durability, Leases, Retention, TaskOptions, WorkerSettings
from .sse import sse
from .streams import Chunk
from .task import Signature, Task
from .workflows import ChainHandle, ChordHandle, GroupHandle, chain, chord, group

__all__ = [
    "AuthenticationFailed",
    "Backoff",
    "CancelOutcome",
    "CancelResult",
    "ChainHandle",
    "ChordHandle",
    "Chunk",
    "ConfigurationError",
    "ConnectionFailed",
    "Conveyor",
    "ConveyorError",
    "Durability",
    "EnqueueRejected",
    "EnqueueUncertain",
    "GroupHandle",
    "Job",
    "JobCancelled",
    "JobContext",
    "JobExpired",
    "JobFailed",
    "JobInfo",
    "JobNotFound",
    "JobState",
    "JobTimeout",
    "Leases",
    "NotReplicated",
    "PayloadError",
    "Progress",
    "ReplayRefused",
    "Retention",
    "Signature",
    "Task",
    "TaskNotFound",
    "TaskOptions",
    "TaskTimeout",
    "UnsupportedServer",
    "WorkerCrashed",
    "WorkerSettings",
    "chain",
    "chord",
    "current_job",
    "group",
    "sse",
]
