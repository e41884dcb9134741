"""Every Redis key name Conveyor uses, built in one place.

All keys of one queue share the hash tag ``{queue}`` so that one Lua script may touch
them on Redis Cluster. Names are validated so that no user string can inject a brace, a
glob character or a separator into a key or an ACL pattern.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final

from .errors import ConfigurationError

NAME_PATTERN: Final = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
ENTRY_PATTERN: Final = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")
#: Each half of a stream entry id is an unsigned 64-bit integer.
ENTRY_PART_MAX: Final = 2**64 - 1
#: Longest job id accepted anywhere: a job id becomes part of a record key, so an entry's
#: ``id`` field must not be able to make one of any size.
MAX_JOB_ID: Final = 200
TOKEN_PATTERN: Final = re.compile(r"[A-Za-z0-9_\-]{1,64}")

#: Priority levels, most urgent first. A worker always drains a higher level before a lower.
LEVELS: Final = ("high", "normal", "low")
LEVEL_CODES: Final = {"high": "h", "normal": "n", "low": "l"}
CODE_LEVELS: Final = {code: level for level, code in LEVEL_CODES.items()}
#: Code of ids the producer mints (delayed jobs, and every job of an app that signs).
DELAYED_CODE: Final = "d"

GROUP: Final = "conveyor"


def validate_name(kind: str, name: str) -> str:
    if not NAME_PATTERN.fullmatch(name):
        raise ConfigurationError(
            f"invalid {kind} name {name!r}: use 1-64 letters, digits, '_', '.' or '-'"
        )
    return name


def level_of(priority: str) -> str:
    if priority not in LEVEL_CODES:
        raise ConfigurationError(f"priority must be one of {', '.join(LEVELS)}, not {priority!r}")
    return priority


@dataclass(frozen=True)
class QueueKeys:
    """The keys of one queue under one namespace."""

    namespace: str
    queue: str
    prefix: str = field(init=False)

    def __post_init__(self) -> None:
        validate_name("namespace", self.namespace)
        validate_name("queue", self.queue)
        object.__setattr__(self, "prefix", f"{self.namespace}:{{{self.queue}}}:")

    def stream(self, level: str) -> str:
        return f"{self.prefix}ready:{level}"

    @property
    def streams(self) -> tuple[str, ...]:
        """Ready streams, most urgent first (the order workers read them in)."""
        return tuple(self.stream(level) for level in LEVELS)

    @property
    def delayed(self) -> str:
        return f"{self.prefix}delayed"

    @property
    def payloads(self) -> str:
        """Hash of job id -> envelope for jobs waiting in the delayed set."""
        return f"{self.prefix}payloads"

    @property
    def dead(self) -> str:
        return f"{self.prefix}dead"

    @property
    def done_channel(self) -> str:
        return f"{self.prefix}done"

    def record(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}"

    def unique(self, unique_key: str) -> str:
        return f"{self.prefix}unique:{unique_key}"

    @property
    def cancelled(self) -> str:
        """Set of ids of queued or running jobs cancelled but not yet skipped or ended:
        what fetch skips and what a worker's lease beat checks its running jobs against."""
        return f"{self.prefix}cancelled"

    def progress(self, job_id: str) -> str:
        """The latest progress a running job reported, beside its record."""
        return f"{self.prefix}progress:{job_id}"

    def chord(self, chord_id: str) -> str:
        """Hash of a chord's fan-in, under its callback's queue: the callback's entry (``cb``)
        and each member's result by index (workflows/)."""
        return f"{self.prefix}chord:{chord_id}"

    def handoff(self, job_id: str) -> str:
        """Marker of a workflow step forwarded from another queue (forward_step.lua): a re-run
        of the step before it adds nothing."""
        return f"{self.prefix}handoff:{job_id}"

    def chunks(self, job_id: str) -> str:
        """The stream of partial results a job emits (``yield`` or ``emit()``), beside its
        record and expiring with it: what ``job.stream()`` and ``conveyor.sse(job)`` read."""
        return f"{self.prefix}chunks:{job_id}"


#: Hash tag of the live-workers registry: '~' is not allowed in queue names, so it never
#: shares keys with a queue, and the heartbeat script's two keys share one slot.
WORKERS_TAG: Final = "{~workers}"


def workers_key(namespace: str) -> str:
    """Sorted set of live worker ids scored by their last heartbeat (Redis time, ms)."""
    return f"{namespace}:{WORKERS_TAG}:registry"


def worker_key(namespace: str, worker_id: str) -> str:
    return f"{namespace}:{WORKERS_TAG}:worker:{worker_id}"


#: Hash tag of the namespace's events stream (events.py): written by workers from memory,
#: never by a queue's scripts, so it needs no queue's tag and may sit on any shard.
EVENTS_TAG: Final = "{~events}"


def events_key(namespace: str) -> str:
    """Capped stream of job events of the namespace (started, succeeded, failed, ...)."""
    return f"{namespace}:{EVENTS_TAG}:stream"


@dataclass(frozen=True)
class JobLocation:
    """Where a job id says its job first lived: a queue and, when known, a ready entry."""

    queue: str
    level: str | None
    entry_id: str | None


def job_id_for(queue: str, level: str, entry_id: str) -> str:
    """The id of a job whose first home is a ready stream entry: readable and routable."""
    return f"{queue}:{LEVEL_CODES[level]}:{entry_id}"


def delayed_job_id(queue: str, token: str) -> str:
    """The id of a job minted before it has an entry: delayed jobs and signed jobs."""
    return f"{queue}:{DELAYED_CODE}:{token}"


def is_entry_id(text: str) -> bool:
    """True for an id a stream can hold: two unsigned 64-bit integers joined by '-'."""
    if not ENTRY_PATTERN.fullmatch(text):
        return False
    ms, seq = text.split("-")
    return int(ms) <= ENTRY_PART_MAX and int(seq) <= ENTRY_PART_MAX


def parse_job_id(job_id: str) -> JobLocation:
    """Read the queue (and first stream entry) out of a job id."""
    if len(job_id) > MAX_JOB_ID:
        raise ConfigurationError(
            f"not a Conveyor job id: {job_id[:40]!r}... is {len(job_id)} characters long "
            f"(at most {MAX_JOB_ID})"
        )
    parts = job_id.split(":")
    if len(parts) != 3 or not NAME_PATTERN.fullmatch(parts[0]) or not parts[2]:
        raise ConfigurationError(f"not a Conveyor job id: {job_id!r}")
    queue, code, rest = parts
    if code == DELAYED_CODE and TOKEN_PATTERN.fullmatch(rest):
        return JobLocation(queue, None, None)
    if code not in CODE_LEVELS or not is_entry_id(rest):
        raise ConfigurationError(
            f"not a Conveyor job id: {job_id!r} (ids look like 'default:n:1700000000000-0' "
            "or 'default:d:<token>')"
        )
    return JobLocation(queue, CODE_LEVELS[code], rest)
