"""The ``expires`` option: a job not started within that many seconds of becoming ready is
not run; it ends ``expired`` with the reason recorded, not dead-lettered as a failure.

"Ready" is when its current entry was added (the enqueue, or the promotion of a delayed or
retried job), which the entry id records on Redis' clock; expire.lua compares it with
Redis' clock, so workers with skewed clocks agree.
"""

from __future__ import annotations

import math

from .broker import Call, run_script
from .broker.calls import Arg
from .broker.workflow_calls import MemberEnd, member_tail
from .errors import ConfigurationError
from .keys import GROUP, QueueKeys
from .wire import JobRecord, encode_record

#: Record state of a job dropped by its ``expires`` option; ``reason`` starts with
#: EXPIRES_REASON. (JobState.EXPIRED also names a finished job whose record is gone: the
#: record, present here, tells them apart.)
EXPIRED_STATE = "expired"
EXPIRES_REASON = "expires"
#: Stream field carrying the option, in whole milliseconds.
EXPIRES_FIELD = "expires"


def expires_ms(expires: float | None) -> int | None:
    """The option as stored in an entry, validated: a positive number of seconds."""
    if expires is None:
        return None
    if isinstance(expires, bool) or not isinstance(expires, (int, float)):
        raise ConfigurationError(f"expires must be a number of seconds, not {expires!r}")
    if not math.isfinite(expires) or expires <= 0:
        raise ConfigurationError(f"expires must be a positive number of seconds, not {expires!r}")
    return max(1, math.ceil(expires * 1000))


def ready_at_ms(entry_id: str) -> int:
    """When an entry was added, in Redis ms: the first half of its id."""
    return int(entry_id.split("-", 1)[0])


def is_expired(entry_id: str, limit_ms: int, now_ms: int) -> bool:
    """The decision expire.lua makes, for a caller that already has Redis' time (a fetch
    reply that carries TIME can spare the script call for jobs that are in time)."""
    return now_ms - ready_at_ms(entry_id) > limit_ms


def expired_record(limit_ms: int, attempt: int | None = None) -> bytes:
    reason = f"{EXPIRES_REASON}: not started within {limit_ms / 1000:g} s of being ready"
    return encode_record(JobRecord(state=EXPIRED_STATE, reason=reason, attempt=attempt))


def expire(
    keys: QueueKeys,
    consumer: str,
    level: str,
    entry_id: str,
    job_id: str,
    limit_ms: int,
    *,
    ttl_ms: int,
    unique_name: str = "",
    attempt: int | None = None,
    publish: str = "PUBLISH",
    ready_at: str = "",
    member: MemberEnd | None = None,
    dry_run: bool = False,
) -> Call[int]:
    """End the delivery if the job waited past its limit: 1 ended ``expired``, 0 in time
    (run it), -1 no longer owned by this consumer (nothing changed). ``ready_at`` is the
    entry's ``ready_at`` field (Redis ms) when a wait for a limit or a shutdown requeue
    moved it: the wait counts from there, not from the entry id. ``member``: a chord
    member tells its chord on this queue in the same step. ``dry_run``: the same answer,
    nothing changed (a member whose chord is elsewhere asks before reporting there)."""
    key_list = [keys.stream(level), keys.record(job_id), keys.cancelled]
    if unique_name:
        key_list.append(keys.unique(unique_name))
    args: list[Arg] = [
        GROUP,
        consumer,
        entry_id,
        job_id,
        limit_ms,
        expired_record(limit_ms, attempt),
        ttl_ms,
        keys.done_channel,
        publish,
        ready_at,
    ]
    args += member_tail(member, key_list)
    args.append("1" if dry_run else "")
    return run_script("expire", key_list, args, int)
