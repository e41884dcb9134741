"""A schedule's last-fired mark in Redis, and the one script that fires ticks against it.

The mark (the UTC ms of the last tick fired) is what lets ``misfire="once"`` and ``"all"``
know what was missed across restarts, and what ``conveyor cron ls`` shows as the last tick.
It lives under the task queue's hash tag, beside the ready stream and the tick keys, so one
script (``cron_fire.lua``) enqueues the ticks and moves the mark in one step on Cluster too.

Sans-IO like ``producer``: these functions build Calls; the worker runs them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .broker import Call, command, run_script, text
from .broker.calls import Arg
from .keys import QueueKeys, job_id_for
from .producer import mint_id, now_ms
from .signing import Signer, resign
from .wire import encode_fields


def mark_key(keys: QueueKeys, task: str) -> str:
    """``ns:{queue}:cron:last:<task>``: the last tick fired, a string of UTC ms, with a TTL."""
    return f"{keys.prefix}cron:last:{task}"


def tick_key(keys: QueueKeys, task: str, tick_ms: int) -> str:
    """The de-duplication key of one tick: the same ``unique:cron:<task>:<tick ms>`` as before."""
    return keys.unique(f"cron:{task}:{tick_ms}")


def _mark(reply: Any) -> int | None:
    return None if reply is None else int(text(reply))


def read_mark(keys: QueueKeys, task: str) -> Call[int | None]:
    """GET the mark: None for a schedule never fired (or whose mark expired)."""
    return command("GET", mark_key(keys, task), parse=_mark)


@dataclass(frozen=True)
class Fired:
    """The reply of one fire call: the mark after it, and (tick ms, job id) of each new job."""

    mark_ms: int | None
    enqueued: tuple[tuple[int, str], ...]


def _fired(reply: Any) -> Fired:
    ticks, ids = reply[1::2], reply[2::2]
    return Fired(
        _mark(reply[0]), tuple((int(text(t)), text(j)) for t, j in zip(ticks, ids, strict=True))
    )


def fire(
    keys: QueueKeys,
    level: str,
    task: str,
    ticks: Sequence[int],
    *,
    unique_window_ms: int,
    mark_ttl_ms: int,
    max_bytes: int,
    signer: Signer | None = None,
    extra: Mapping[str, str] | None = None,
) -> Call[Fired]:
    """Enqueue ``task`` (no arguments) once per tick, oldest first, and advance the mark.

    Safe to run from any number of workers at once and to resend after a timeout: a tick
    at or below the mark, or whose tick key exists, is not enqueued again. Even with no
    ticks it refreshes the mark's TTL. ``extra``: fields every job carries (the trace
    context of the fire's producer span), signed with the rest.
    """
    ordered = sorted(set(ticks))
    key_list = [mark_key(keys, task), keys.stream(level)]
    key_list += [tick_key(keys, task, t) for t in ordered]
    prefix = "" if signer is not None else job_id_for(keys.queue, level, "")
    args: list[Arg] = [mark_ttl_ms, unique_window_ms, level, prefix, len(ordered)]
    records: list[str] = []
    enqueued_at = now_ms()
    for tick in ordered:
        job_id = ""
        if signer is not None:
            job_id = mint_id(keys.queue)
            records.append(keys.record(job_id))
        fields = encode_fields(
            task,
            (),
            {},
            enqueued_at=enqueued_at,
            job_id=job_id or None,
            max_bytes=max_bytes,
            signer=signer,
            queue=keys.queue if signer is not None else None,
            level=level if signer is not None else None,
        )
        if extra:
            fields = resign({**fields, **extra}, signer, keys.queue, level)
        args += [tick, job_id, len(fields)]
        for name, value in fields.items():
            args += (name, value)
    return run_script("cron_fire", key_list + records, args, _fired)
