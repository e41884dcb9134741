"""Sans-IO descriptions of what to send to Redis and how to read the reply.

A Call is built once and run by either face of the Broker (sync or asyncio), so the two
never drift apart.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ..scripts import Script, script

T = TypeVar("T")

Arg = str | bytes | int | float


def text(value: Any) -> str:
    """A reply element as str: bytes decoded (bad UTF-8 replaced), anything else str()."""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _identity(reply: Any) -> Any:
    return reply


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One command or script invocation and the parser of its reply."""

    command: tuple[Arg, ...]
    parse: Callable[[Any], T]
    script: Script | None = None
    #: when set, an error reply is handed to ``parse`` instead of raised
    accepts_errors: bool = False
    #: False for calls that must not be sent twice (a plain enqueue): when their outcome is
    #: unknown (a timeout after sending), the caller gets EnqueueUncertain, not a resend
    retry_safe: bool = True


def command(
    *args: Arg, parse: Callable[[Any], T] = _identity, accepts_errors: bool = False
) -> Call[T]:
    return Call(tuple(args), parse, accepts_errors=accepts_errors)


def run_script(
    name: str,
    keys: Sequence[str],
    args: Sequence[Arg],
    parse: Callable[[Any], T] = _identity,
) -> Call[T]:
    s = script(name)
    return Call(("EVALSHA", s.sha, len(keys), *keys, *args), parse, s)
