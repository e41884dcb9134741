"""What producers send: adding jobs to a ready stream (one, many, or one per unique key) and
parking delayed ones, each as a Call (see operations.py for the rest of a job's life)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import chain

from ..keys import QueueKeys
from .calls import Arg, Call, run_script, text


def enqueue(keys: QueueKeys, level: str, fields: Mapping[str, Arg]) -> Call[str]:
    return Call(("XADD", keys.stream(level), "*", *chain.from_iterable(fields.items())), text)


def enqueue_many(keys: QueueKeys, level: str, jobs: Sequence[Mapping[str, Arg]]) -> Call[list[str]]:
    """Add many jobs to one ready stream in one script: all of them, or none at the memory
    limit. The reply lists their entry ids in order."""
    args: list[Arg] = []
    for fields in jobs:
        args.append(len(fields))
        args.extend(chain.from_iterable(fields.items()))
    return run_script("enqueue_many", [keys.stream(level)], args, lambda r: [text(i) for i in r])


@dataclass(frozen=True, slots=True)
class Unique:
    """De-duplication of enqueues: one job per key within a window."""

    key: str
    window_ms: int


def enqueue_unique(
    keys: QueueKeys, level: str, fields: Mapping[str, Arg], unique: Unique, id_prefix: str
) -> Call[tuple[bool, str]]:
    args: list[Arg] = [unique.window_ms, id_prefix]
    for name, value in fields.items():
        args += (name, value)
    return run_script(
        "enqueue_unique",
        [keys.unique(unique.key), keys.stream(level)],
        args,
        lambda r: (bool(int(r[0])), text(r[1])),
    )


def schedule(
    keys: QueueKeys,
    job_id: str,
    payload: bytes,
    *,
    delay_ms: int = 0,
    at_ms: int | None = None,
    unique: Unique | None = None,
) -> Call[tuple[bool, str]]:
    key_list = [keys.delayed, keys.payloads, keys.record(job_id)]
    args: list[Arg] = [job_id, payload, delay_ms, "" if at_ms is None else at_ms]
    if unique is not None:
        key_list.append(keys.unique(unique.key))
        args.append(unique.window_ms)
    return run_script("schedule", key_list, args, lambda r: (bool(int(r[0])), text(r[1])))
