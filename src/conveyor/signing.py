"""Optional HMAC signing of job envelopes, checked before anything in them is decoded.

With signing on, a worker runs only jobs made by a holder of a key: a write to Redis by
anyone else (a leaked password, a shared instance) cannot start a task. Keys rotate: the
first key signs, every key verifies, so a new key can be added first and the old one
dropped once no job signed with it remains.

The signature covers every field of the entry but itself (id, attempt, history, timestamps,
task, arguments, and any field added later) and the queue and priority level the entry
sits in, so a copy cannot be re-targeted at another job's record, another attempt count or
another stream. Replaying an unchanged copy is stopped by the worker, which skips a job
whose id has already ended (every signed job carries an id, minted at enqueue).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from typing import TypeVar

from .errors import ConfigurationError

V = TypeVar("V", bound=bytes | str | int | float)

FIELD = "sig"
_FIELD_BYTES = FIELD.encode()
#: Changes whenever what is signed changes: a v1 signature (task and arguments only) never
#: verifies as a v2 one.
_DOMAIN = b"conveyor-envelope-v2"


def _bytes(value: bytes | str | int | float) -> bytes:
    """A field value as Redis stores it (a number is sent as its text)."""
    if isinstance(value, bytes):
        return value
    return value.encode() if isinstance(value, str) else str(value).encode()


def _part(data: bytes) -> bytes:
    return len(data).to_bytes(8, "big") + data


def message(fields: Mapping[bytes, bytes], queue: str, level: str) -> bytes:
    """The signed text: domain, queue, level, then every field but the signature, sorted by
    name, each part length-prefixed so that no two different entries share a message."""
    parts = [_part(_DOMAIN), _part(queue.encode()), _part(level.encode())]
    for name in sorted(fields):
        if name != _FIELD_BYTES:
            parts += (_part(name), _part(fields[name]))
    return b"".join(parts)


class Signer:
    def __init__(self, keys: Sequence[bytes | str]) -> None:
        if not keys:
            raise ConfigurationError("signing_keys must hold at least one key")
        self.keys = [_bytes(k) for k in keys]
        if any(len(k) < 16 for k in self.keys):
            raise ConfigurationError("signing keys must be at least 16 bytes long")

    def sign(self, fields: Mapping[str, bytes | str | int | float], queue: str, level: str) -> str:
        """The signature of an entry about to be added to ``queue`` at ``level``."""
        raw = {name.encode(): _bytes(value) for name, value in fields.items()}
        return self._digest(self.keys[0], message(raw, queue, level))

    def verify(self, fields: Mapping[bytes, bytes], queue: str, level: str) -> bool:
        """True when the entry, read from ``queue`` at ``level``, is signed by some key."""
        given = fields.get(_FIELD_BYTES)
        if given is None:
            return False
        signed = message(fields, queue, level)
        return any(
            hmac.compare_digest(given, self._digest(key, signed).encode()) for key in self.keys
        )

    @staticmethod
    def _digest(key: bytes, data: bytes) -> str:
        return hmac.new(key, data, hashlib.sha256).hexdigest()


def resign(
    fields: Mapping[str, V], signer: Signer | None, queue: str, level: str
) -> dict[str, V | str]:
    """The same fields with a fresh signature for ``queue``/``level`` (none without a signer).

    For code that rewrites an entry (dead-letter and history replays): any change to a field
    invalidates the old signature.
    """
    out: dict[str, V | str] = {k: v for k, v in fields.items() if k != FIELD}
    if signer is not None:
        out[FIELD] = signer.sign(out, queue, level)
    return out
