"""Exceptions users can catch; each message says what to do next."""

from __future__ import annotations

from typing import Any


class ConveyorError(Exception):
    """Base class of every error Conveyor raises on purpose."""


START_REDIS = (
    "Start one with `redis-server --daemonize yes --bind 127.0.0.1 --port 6379 "
    '--save "" --appendonly no`, or point CONVEYOR_REDIS_URL (or REDIS_URL) at yours.'
)
CREDENTIALS = (
    "Put the credentials in the URL: redis://:PASSWORD@host:port/0, or "
    "redis://USER:PASSWORD@host:port/0 for an ACL user (percent-encode special characters)."
)


class ConnectionFailed(ConveyorError):
    """Redis did not answer at the configured URL (or something else answered).

    ``fix`` replaces the default advice (start a Redis) when the cause is known to be
    something else, such as a URL that points at an HTTP server.
    """

    def __init__(
        self, url: str, cause: BaseException | None = None, *, fix: str | None = None
    ) -> None:
        super().__init__(
            f"cannot connect to Redis at {redact_url(url)}{_detail(cause, ': {}')}. "
            f"{fix or START_REDIS}"
        )
        self.url = url


class AuthenticationFailed(ConnectionFailed):
    """Redis refused the credentials (none given where a password is required, or wrong).

    Never retried: the same credentials fail the same way every time.
    """

    def __init__(self, url: str, cause: BaseException | None = None) -> None:
        text = str(cause or "")
        if "without any password configured" in text or "no password is set" in text:
            why = "a password was given but this server has none. Drop it from the URL."
        elif "NOAUTH" in text or "authenticated" in text or "required" in text.lower():
            why = f"authentication is required and no password was given. {CREDENTIALS}"
        else:
            why = f"the username or password was refused. Check them. {CREDENTIALS}"
        ConveyorError.__init__(self, f"Redis at {redact_url(url)} refused the connection: {why}")
        self.url = url


class EnqueueUncertain(ConveyorError):
    """An enqueue was sent but its reply never came: the job may or may not have been added.

    It is not resent, since that could add the job twice. ``added`` holds what a bulk
    enqueue added for certain before the uncertain batch (Job handles), when known.
    """

    def __init__(
        self,
        url: str,
        cause: BaseException | None = None,
        *,
        batch: bool = False,
        added: list[Any] | None = None,
    ) -> None:
        what = "the jobs of this batch" if batch else "the job"
        super().__init__(
            f"an enqueue sent to Redis at {redact_url(url)} got no reply{_detail(cause)}; "
            f"{what} may or may not have been added, and nothing was resent because that "
            "could add a job twice. To retry safely, enqueue with a unique key "
            "(task.using(unique_key=...)), which adds at most one job per key; or check "
            "whether it arrived (`conveyor stats`, XRANGE on the queue's stream) before "
            "enqueueing again."
        )
        self.url = url
        self.added: list[Any] = added or []


class NotReplicated(ConveyorError):
    """An enqueue asked for durability (``Durability``), and fewer replicas (or AOF fsyncs)
    confirmed it in time than asked for.

    The jobs *were* added on the master and are not removed: they run unless the master
    fails before a replica has them. ``added`` holds what the enqueue returned (Job handles
    where the caller knows them), ``confirmed`` how many replicas confirmed.
    """

    def __init__(
        self,
        url: str,
        wanted: int,
        confirmed: int,
        timeout: float,
        *,
        what: str = "replicas",
        added: list[Any] | None = None,
    ) -> None:
        super().__init__(
            f"only {confirmed} of {wanted} {what} of Redis at {redact_url(url)} confirmed the "
            f"enqueue within {timeout:g} s; the job was added but a failover now could lose "
            "it. Check the replicas (INFO replication: connected_slaves, lag), raise "
            "wait_timeout, or ask for fewer replicas."
        )
        self.url = url
        self.wanted = wanted
        self.confirmed = confirmed
        self.added: list[Any] = added or []


def _detail(cause: BaseException | None, form: str = " ({})") -> str:
    """A cause as a suffix on one line (Redis and socket errors can span lines)."""
    text = " ".join(str(cause or "").split()).rstrip(".")
    return form.format(text) if text else ""


class WorkerCrashed(ConveyorError):
    """A part of the worker that must run while it works ended; the process should restart.

    Raised by Worker.run after the worker handed back its jobs; ``conveyor worker`` exits
    non-zero on it and its supervisor starts a fresh process.
    """


class ReplayRefused(ConveyorError):
    """A replay was refused (the job has not ended, or the entry is not validly signed)."""


class UnsupportedServer(ConveyorError):
    """The Redis server is too old or lacks a command Conveyor needs."""


class ConfigurationError(ConveyorError, ValueError):
    """A setting, queue name or task option was rejected."""


class PayloadError(ConveyorError, ValueError):
    """A job envelope could not be built or read (bad JSON, too big, missing fields)."""


class TaskNotFound(ConveyorError, LookupError):
    """No task of that name is registered with the app."""


class EnqueueRejected(ConveyorError):
    """Redis refused a new job, most often because it reached maxmemory.

    From a bulk enqueue, ``added`` holds what was added before the refusal (Job handles from
    ``enqueue_many``), so a caller retries only the rest instead of duplicating jobs.
    """

    def __init__(self, message: str, *, added: list[Any] | None = None) -> None:
        super().__init__(message)
        self.added: list[Any] = added or []


class JobFailed(ConveyorError):
    """The job ended in the dead-letter stream; carries its last error."""

    def __init__(self, job_id: str, error: str | None, traceback: str | None = None) -> None:
        super().__init__(f"job {job_id} failed: {error or 'unknown error'}")
        self.job_id = job_id
        self.error = error
        self.traceback = traceback


class JobCancelled(ConveyorError):
    """The job was cancelled (``job.cancel()`` or ``conveyor cancel``); it has no result."""

    def __init__(self, job_id: str, reason: str | None = None) -> None:
        super().__init__(f"job {job_id} was cancelled{f': {reason}' if reason else ''}")
        self.job_id = job_id
        self.reason = reason


class JobExpired(ConveyorError):
    """The job was not run: it waited longer than its ``expires`` option allows."""

    def __init__(self, job_id: str, reason: str | None = None) -> None:
        super().__init__(
            f"job {job_id} was not run: {reason or 'it waited past its expires option'}; "
            "enqueue it again, or raise its expires option if it should wait longer"
        )
        self.job_id = job_id
        self.reason = reason


class JobNotFound(ConveyorError, LookupError):
    """Redis holds nothing for that job id (never enqueued, or its record expired)."""


class JobTimeout(ConveyorError, TimeoutError):
    """Waiting for a job's result took longer than the caller allowed."""


class TaskTimeout(ConveyorError, TimeoutError):
    """A task ran longer than its `timeout` option."""


def redact_url(url: str) -> str:
    """Hide the password of a Redis URL so it can be logged."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user + ':' if user else ':'}***@{host}"
