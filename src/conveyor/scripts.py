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
    "fetch",
    "complete",
    "retry",
    "dead",
    "requeue",
    "renew",
    "reclaim",
    "retire",
    "schedule",
    "due",
    "promote",
    "status",
    "trim",
    "replay",
)


@dataclass(frozen=True)
class Script:
    name: str
    source: str
    sha: str


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


@cache
def script(name: str) -> Script:
    source = _expand(_read(f"{name}.lua"))
    return Script(name, source, hashlib.sha1(source.encode()).hexdigest())


def all_scripts() -> tuple[Script, ...]:
    return tuple(script(name) for name in NAMES)
