"""Scripts as the lead is to change them (tests/lua/*.lua), called like the real ones.

The cancellation, expiry and unique-until-done work touches scripts owned elsewhere
(fetch.lua, complete.lua, dead.lua, retry.lua); their changed versions live in tests/lua
until they are integrated, so the diffs handed over are tested ones.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from conveyor import scripts
from conveyor.broker import Call
from conveyor.broker.calls import Arg
from conveyor.scripts import Script

T = TypeVar("T")
HERE = Path(__file__).parent / "lua"


@functools.cache
def proposed(name: str) -> Script:
    source = scripts._expand((HERE / f"{name}.lua").read_text(encoding="utf-8"))
    flags = next(
        (
            line.removeprefix("-- @flags").strip()
            for line in source.splitlines()
            if line.startswith("-- @flags")
        ),
        "",
    )
    flagged = f"#!lua flags={flags}\n{source}" if flags else f"#!lua\n{source}"
    return Script(f"proposed_{name}", source, scripts._sha(source), flagged, scripts._sha(flagged))


def run_proposed(
    name: str, keys: Sequence[str], args: Sequence[Arg], parse: Callable[[Any], T]
) -> Call[T]:
    s = proposed(name)
    return Call(("EVALSHA", s.sha, len(keys), *keys, *args), parse, s)
