"""The Lua scripts, one file per atomic state transition, loaded once and called by SHA.

A script may pull in shared fragments from ``lua/includes`` with a ``-- @include name`` line.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Final

NAMES: Final = (
    "create_group",
    "fetch",
    "fetch_plan",
    "complete",
    "retry",
    "dead",
    "reject",
    "requeue",
    "renew",
    "reclaim",
    "retire",
    "schedule",
    "enqueue_unique",
    "enqueue_many",
    "enqueue_signed",
    "enqueue_many_signed",
    "due",
    "promote",
    "status",
    "trim",
    "replay",
    "heartbeat",
    "limit_gate",
    "concurrency_release",
    "concurrency_renew",
    "cron_fire",
    "cancel",
    "end_cancelled",
    "expire",
    "progress",
    "idle",
    "forward_step",
    "chord_open",
    "chord_report",
    "chord_failed",
    "owns",
    "chunk_append",
    "append_events",
)


@dataclass(frozen=True)
class Script:
    """A script in two forms: plain (Redis 6.2) and with a ``#!lua flags=...`` shebang (7.0+).

    The shebang lets Redis enforce what the script may do: transitions that drain work carry
    ``allow-oom`` so acks and dead-lettering still work at the memory limit, while scripts
    that add work are refused up front, before any write, instead of failing halfway.
    """

    name: str
    source: str
    sha: str
    flagged_source: str
    flagged_sha: str

    def variant(self, flagged: bool) -> tuple[str, str]:
        """(sha, source) for a server with (True) or without (False) script flags."""
        return (self.flagged_sha, self.flagged_source) if flagged else (self.sha, self.source)


def _read(relative: str) -> str:
    node = resources.files("conveyor").joinpath("lua")
    for part in relative.split("/"):
        node = node.joinpath(part)
    return node.read_text(encoding="utf-8")


def _expand(source: str) -> str:
    lines = []
    for line in source.splitlines():
        if line.startswith("-- @include "):
            lines.append(_read(f"includes/{line.split()[-1]}.lua").rstrip())
        else:
            lines.append(line)
    return "\n".join(lines) + "\n"


def _sha(source: str) -> str:
    return hashlib.sha1(source.encode()).hexdigest()


@cache
def script(name: str) -> Script:
    source = _expand(_read(f"{name}.lua"))
    flags = None
    for line in source.splitlines():
        if line.startswith("-- @flags"):
            flags = line.removeprefix("-- @flags").strip()
            break
    shebang = f"#!lua flags={flags}" if flags else "#!lua"
    flagged = f"{shebang}\n{source}"
    return Script(name, source, _sha(source), flagged, _sha(flagged))


def all_scripts() -> tuple[Script, ...]:
    return tuple(script(name) for name in NAMES)
