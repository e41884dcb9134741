"""Every queue operation as a Call: which keys, which arguments, and how to read the reply.

Built once here and run by either face of the Broker. Reply parsers accept the raw RESP
shapes that scripts return (lists of bytes).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from ..keys import GROUP, LEVELS, QueueKeys, job_id_for
from .calls import Arg, Call, command, run_script, text
from .workflow_calls import Handoff, MemberEnd, handoff_args, member_tail

Fields = dict[bytes, bytes]
LEVEL_INDEX = {level: i for i, level in enumerate(LEVELS, start=1)}


#: Not frozen: a frozen dataclass's __init__ sets each field through object.__setattr__,
#: about 4x the cost of a plain one, and this is built once per job on the hot path.
@dataclass(slots=True)
class Delivery:
    """One stream entry handed to this consumer."""

    queue: str
    level: str
    entry_id: str
    fields: Fields
    deliveries: int = 1


def _fields(flat: Sequence[bytes]) -> Fields:
    it = iter(flat)
    return dict(zip(it, it, strict=False))  # an entry is an even list: field, value, ...


# -- consuming -------------------------------------------------------------------------------
def ensure_group(stream: str) -> Call[bool]:
    """Create the consumer group at id 0, so jobs added before any worker ran are kept."""
    return run_script("create_group", [stream], [GROUP], lambda r: bool(int(r)))


def group_lost(error: BaseException) -> bool:
    """Whether Redis refused a call because the queue's stream or consumer group is gone
    (Redis lost the queue's state): NOGROUP, or for a read blocked when it went UNBLOCKED
    ("the stream key no longer exists", "the consumer group ... no longer exists")."""
    text = str(error)
    return "NOGROUP" in text or (text.startswith("UNBLOCKED") and "no longer exists" in text)


class Fetched(list[Delivery]):
    """What fetch.lua delivered to run, and apart (``marked``) the deliveries of jobs marked
    cancelled: still this consumer's and marked, for the worker to end with
    end_cancelled.lua (the script knows their job ids, not their record keys)."""

    marked: list[Delivery]


def fetch(keys: QueueKeys, consumer: str, count: int) -> Call[Fetched]:
    def parse(reply: Any) -> Fetched:
        out = Fetched()
        out.marked = []
        for item in reply:
            level = LEVELS[int(item[0]) - 1]
            for entry_id, flat in item[1]:
                out.append(Delivery(keys.queue, level, text(entry_id), _fields(flat)))
            for entry_id, flat in item[2] if len(item) > 2 else ():
                out.marked.append(Delivery(keys.queue, level, text(entry_id), _fields(flat)))
        return out

    # The cancelled set and each stream's job id prefix let the script set apart entries of
    # jobs marked cancelled (one SCARD per call when none is pending).
    prefixes = [job_id_for(keys.queue, level, "") for level in LEVELS]
    return run_script(
        "fetch",
        [*keys.streams, keys.cancelled],
        [GROUP, consumer, count, *prefixes],
        parse,
    )


class Plan(NamedTuple):
    """What fetch_plan.lua found: ``(level, count)`` to read, most urgent first (None when
    ``fetch`` must read instead), and whether a cancel is pending on the queue."""

    reads: list[tuple[str, int]] | None
    cancels: bool = False


def fetch_plan(keys: QueueKeys, count: int) -> Call[Plan]:
    """How many new entries to read from each level (fetch_plan.lua)."""

    def parse(reply: Any) -> Plan:
        if reply is None or reply == -1:
            return Plan(None, reply == -1)
        return Plan([(lv, int(n)) for lv, n in zip(LEVELS, reply, strict=True) if int(n) > 0])

    return run_script("fetch_plan", [*keys.streams, keys.cancelled], [GROUP, count], parse)


def read_level(keys: QueueKeys, level: str, consumer: str, count: int) -> Call[list[Delivery]]:
    """XREADGROUP of up to ``count`` new entries of one level, without a script: what the
    previous fetch's plan found there. Entries are not checked for cancel marks here; the
    plan asked after the read says when a cancel is pending (Fetcher._fetch)."""
    stream = keys.stream(level)
    return command(
        "XREADGROUP",
        "GROUP",
        GROUP,
        consumer,
        "COUNT",
        count,
        "STREAMS",
        stream,
        ">",
        parse=lambda reply: _deliveries({stream: (keys.queue, level)}, reply),
    )


def _deliveries(streams: Mapping[str, tuple[str, str]], reply: Any) -> list[Delivery]:
    """An XREADGROUP reply (RESP2 lists or RESP3 maps, fields as pairs or dicts) as
    deliveries; ``streams`` maps stream key -> (queue, level). Entries deleted since they
    were added (nil) are skipped."""
    out: list[Delivery] = []
    if not reply:
        return out
    items = reply.items() if isinstance(reply, dict) else reply
    for stream, entries in items:
        queue, level = streams[text(stream)]
        for entry in entries:
            if entry is None:
                continue
            entry_id, data = entry
            if data is None:
                continue
            fields = data if isinstance(data, dict) else _fields(data)
            out.append(Delivery(queue, level, text(entry_id), fields))
    return out


def block_read(
    streams: Mapping[str, tuple[str, str]], consumer: str, count: int, block_ms: int
) -> Call[list[Delivery]]:
    """XREADGROUP BLOCK on many streams; ``streams`` maps stream key -> (queue, level)."""

    def parse(reply: Any) -> list[Delivery]:
        return _deliveries(streams, reply)

    names = list(streams)
    return command(
        "XREADGROUP",
        "GROUP",
        GROUP,
        consumer,
        "COUNT",
        count,
        "BLOCK",
        block_ms,
        "STREAMS",
        *names,
        *([">"] * len(names)),
        parse=parse,
    )


#: Not frozen: a frozen dataclass's __init__ sets each field through object.__setattr__,
#: about 4x the cost of a plain one, and this is built once per job on the hot path.
@dataclass(slots=True)
class Completion:
    level: str
    entry_id: str
    job_id: str
    record: bytes
    ttl_ms: int
    #: the unique key (name) the job holds until done, freed by the ack; "" for none
    unique: str = ""
    #: (leases zset, waiters zset) of the concurrency lease the job holds, given back by
    #: the ack (limits/concurrency.py); None for none
    lease: tuple[str, str] | None = None
    #: what the ack adds in the same step for a workflow job (its queue's keys only)
    handoffs: tuple[Handoff, ...] = ()


def _stream_id(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def complete(
    keys: QueueKeys, consumer: str, done: Sequence[Completion], publish: str = "PUBLISH"
) -> Call[list[int]]:
    """Ack a batch and store records; the reply lists (0-based) completions refused.

    ``publish`` is ``Broker.publish_command``: SPUBLISH on Redis Cluster 7+."""
    by_level: dict[str, list[int]] = {}
    for i, c in enumerate(done):
        by_level.setdefault(c.level, []).append(i)
    args: list[Arg] = [GROUP, consumer, keys.done_channel, publish, 0]
    order: list[int] = []  # positions in ``done``, in the order the script sees them
    unique_keys: list[str] = []
    lease_keys: list[str] = []
    first_unique = 5 + len(done)  # KEYS index of the first unique key
    n_unique = sum(1 for c in done if c.unique)
    levels: list[Arg] = []
    for level, positions in by_level.items():
        ids = [_stream_id(done[i].entry_id) for i in positions]
        low, high = min(ids), max(ids)
        levels += (LEVEL_INDEX[level], len(positions), f"{low[0]}-{low[1]}", f"{high[0]}-{high[1]}")
        for i in positions:
            c = done[i]
            u = 0
            if c.unique:
                u = first_unique + len(unique_keys)
                unique_keys.append(keys.unique(c.unique))
            lease = 0
            if c.lease is not None:
                lease = first_unique + n_unique + len(lease_keys)
                lease_keys += (*c.lease, keys.delayed)
            levels += (c.entry_id, c.record, c.ttl_ms, c.job_id, u, lease)
        order += positions
    record_keys = [keys.record(done[i].job_id) for i in order]
    key_list = [*keys.streams, keys.cancelled, *record_keys, *unique_keys, *lease_keys]
    handoffs: list[Arg] = []
    for j, i in enumerate(order, start=1):
        for h in done[i].handoffs:
            handoffs += handoff_args(j, h, key_list)
    args[4] = len(handoffs)
    return run_script(
        "complete",
        key_list,
        args + handoffs + levels,
        lambda r: [order[int(i) - 1] for i in r],
    )


def retry(
    keys: QueueKeys,
    consumer: str,
    d: Delivery,
    job_id: str,
    payload: bytes,
    delay_ms: int,
    record: bytes,
    *,
    cancelled_record: bytes = b"{}",
    ttl_ms: int = 86_400_000,
    unique: str = "",
    publish: str = "PUBLISH",
) -> Call[int]:
    """Park a job in the delayed set for its next attempt (or a bounce). The reply is 1,
    0 when the consumer no longer owns the entry, or 2 when the job had been marked
    cancelled while it ran: then it ended ``cancelled`` (``cancelled_record``, kept
    ``ttl_ms``) instead, freeing its until-done ``unique`` key."""
    key_list = [keys.stream(d.level), keys.delayed, keys.payloads, keys.record(job_id)]
    key_list.append(keys.cancelled)
    if unique:
        key_list.append(keys.unique(unique))
    return run_script(
        "retry",
        key_list,
        [
            GROUP,
            consumer,
            d.entry_id,
            job_id,
            payload,
            delay_ms,
            record,
            cancelled_record,
            ttl_ms,
            keys.done_channel,
            publish,
        ],
        int,
    )


def dead(
    keys: QueueKeys,
    consumer: str,
    d: Delivery,
    job_id: str,
    record: bytes,
    ttl_ms: int,
    fields: Iterable[tuple[str, bytes | str]],
    publish: str = "PUBLISH",
    unique: str = "",
    member: MemberEnd | None = None,
) -> Call[str | None]:
    """Move a job to the dead letters; frees its until-done ``unique`` key and drops a
    stale cancel mark in the same step, and tells a chord on this queue (``member``)."""
    args: list[Arg] = [
        GROUP,
        consumer,
        d.entry_id,
        record,
        ttl_ms,
        keys.done_channel,
        publish,
        job_id,
    ]
    key_list = [keys.stream(d.level), keys.dead, keys.record(job_id), keys.cancelled]
    if unique:
        key_list.append(keys.unique(unique))
    args += member_tail(member, key_list)
    for name, value in fields:
        args += (name, value)
    return run_script("dead", key_list, args, lambda r: text(r) if r else None)


def owns(keys: QueueKeys, d: Delivery, consumer: str) -> Call[bool]:
    """Whether ``consumer`` still holds the delivery (a read; ending scripts check again)."""
    return run_script(
        "owns", [keys.stream(d.level)], [GROUP, d.entry_id, consumer], lambda r: int(r) == 1
    )


def reject(
    keys: QueueKeys, consumer: str, d: Delivery, fields: Iterable[tuple[str, bytes | str]]
) -> Call[str | None]:
    """End a delivery into the dead stream without touching any job record."""
    args: list[Arg] = [GROUP, consumer, d.entry_id]
    for name, value in fields:
        args += (name, value)
    return run_script(
        "reject", [keys.stream(d.level), keys.dead], args, lambda r: text(r) if r else None
    )


def requeue(
    keys: QueueKeys,
    consumer: str,
    d: Delivery,
    job_id: str,
    fields: Mapping[str, Arg],
    *,
    cancelled_record: bytes = b"{}",
    ttl_ms: int = 86_400_000,
    unique: str = "",
    publish: str = "PUBLISH",
) -> Call[str | None]:
    """Hand a job back to its stream (shutdown). The reply is the new entry id, "cancelled"
    when the job had been marked cancelled (it ended so instead), or None when the consumer
    no longer owns the entry."""
    args: list[Arg] = [
        GROUP,
        consumer,
        d.entry_id,
        d.level,
        job_id,
        cancelled_record,
        ttl_ms,
        keys.done_channel,
        publish,
    ]
    for name, value in fields.items():
        args += (name, value)
    key_list = [keys.stream(d.level), keys.record(job_id), keys.cancelled]
    if unique:
        key_list.append(keys.unique(unique))
    return run_script("requeue", key_list, args, lambda r: text(r) if r else None)


#: Pending entries a renewal reads beyond the ids it renews: finished jobs whose acks are in
#: flight sit between them; past the window, the script looks an id up alone.
RENEW_MARGIN = 64
#: Most ids one renew script extends. XCLAIM costs Redis about 2.5 us an id (it writes a
#: propagation record per id), so a worker holding 1,000 jobs would stall every other client
#: for milliseconds in one script; chunks of this size cost well under one each.
RENEW_CHUNK = 200


def renew(
    keys: QueueKeys, level: str, consumer: str, entry_ids: Sequence[str], pel_limit: int
) -> list[Call[list[str]]]:
    """Calls renewing the leases of ``entry_ids``: each replies with the ids another
    consumer now holds (the lease was lost).

    The ids are sorted and cut into chunks of RENEW_CHUNK; each chunk's script reads this
    consumer's pending entries only between the chunk's lowest and highest id (at most
    ``pel_limit``), never its whole pending list.
    """
    ordered = sorted(entry_ids, key=_stream_id)
    calls = []
    for start in range(0, len(ordered), RENEW_CHUNK):
        chunk = ordered[start : start + RENEW_CHUNK]
        window = min(pel_limit, len(chunk) + RENEW_MARGIN)
        calls.append(
            run_script(
                "renew",
                [keys.stream(level)],
                [GROUP, consumer, window, chunk[0], chunk[-1], *chunk],
                lambda r: [text(x) for x in r],
            )
        )
    return calls


def reclaim(
    keys: QueueKeys, level: str, consumer: str, min_idle_ms: int, count: int
) -> Call[tuple[list[Delivery], list[str]]]:
    def parse(reply: Any) -> tuple[list[Delivery], list[str]]:
        claimed, deleted = reply
        out = [
            Delivery(keys.queue, level, text(eid), _fields(flat), int(n))
            for eid, flat, n in claimed
        ]
        return out, [text(x) for x in deleted]

    return run_script("reclaim", [keys.stream(level)], [GROUP, consumer, min_idle_ms, count], parse)


def retire(keys: QueueKeys, consumer: str) -> Call[bool]:
    return run_script("retire", keys.streams, [GROUP, consumer], lambda r: bool(int(r)))


# -- scheduling and upkeep -------------------------------------------------------------------
def due(keys: QueueKeys, limit: int) -> Call[tuple[list[str], int]]:
    def parse(reply: Any) -> tuple[list[str], int]:
        ids, wait = reply
        return [text(x) for x in ids], int(wait)

    return run_script("due", [keys.delayed], [limit], parse)


def promote(keys: QueueKeys, job_ids: Sequence[str]) -> Call[int]:
    return run_script(
        "promote",
        [keys.delayed, keys.payloads, *keys.streams, *(keys.record(j) for j in job_ids)],
        list(job_ids),
        int,
    )


def trim(keys: QueueKeys, level: str, keep_count: int, keep_ms: int, cap: int) -> Call[int]:
    return run_script("trim", [keys.stream(level)], [keep_count, keep_ms, cap], int)


@dataclass(frozen=True, slots=True)
class Whereabouts:
    """Raw answer of the status script: the record (if any) and where the job is."""

    record: bytes | None
    place: str
    detail: tuple[str, ...]


def status(
    keys: QueueKeys, job_id: str, level: str | None, entry_id: str | None
) -> Call[Whereabouts]:
    def parse(reply: Any) -> Whereabouts:
        record = reply[0] or None
        return Whereabouts(record, text(reply[1]), tuple(text(x) for x in reply[2:]))

    return run_script(
        "status",
        [keys.record(job_id), *keys.streams, keys.delayed],
        [GROUP, job_id, level or "", entry_id or ""],
        parse,
    )


def replay(
    keys: QueueKeys, dead_id: str, level: str, job_id: str, fields: Mapping[str, Arg]
) -> Call[str | None]:
    args: list[Arg] = [dead_id, level]
    for name, value in fields.items():
        args += (name, value)
    return run_script(
        "replay",
        [keys.dead, keys.stream(level), keys.record(job_id)],
        args,
        lambda r: text(r) if r else None,
    )
