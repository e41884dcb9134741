"""Optional HMAC signing of job envelopes, checked before anything in them is decoded.

With signing on, a worker runs only jobs made by a holder of a key: a write to Redis by
anyone else (a leaked password, a shared instance) cannot start a task. Keys rotate: the
first key signs, every key verifies, so a new key can be added first and the old one
dropped once no job signed with it remains.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence

from .errors import ConfigurationError

FIELD = "sig"
_DOMAIN = b"conveyor-envelope-v1"


def _bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


class Signer:
    def __init__(self, keys: Sequence[bytes | str]) -> None:
        if not keys:
            raise ConfigurationError("signing_keys must hold at least one key")
        self.keys = [_bytes(k) for k in keys]
        if any(len(k) < 16 for k in self.keys):
            raise ConfigurationError("signing keys must be at least 16 bytes long")

    @staticmethod
    def _message(task: bytes | str, args: bytes | str, kwargs: bytes | str) -> bytes:
        # Length-prefixed parts, so no two different envelopes share a message.
        parts = [_DOMAIN, _bytes(task), _bytes(args), _bytes(kwargs)]
        return b"".join(len(p).to_bytes(8, "big") + p for p in parts)

    def sign(self, task: bytes | str, args: bytes | str, kwargs: bytes | str) -> str:
        return hmac.new(self.keys[0], self._message(task, args, kwargs), hashlib.sha256).hexdigest()

    def verify(self, fields: Mapping[bytes, bytes]) -> bool:
        """True when the entry's signature matches its task and arguments under some key."""
        given = fields.get(FIELD.encode())
        parts = [fields.get(name) for name in (b"task", b"args", b"kwargs")]
        if given is None or any(p is None for p in parts):
            return False
        message = self._message(*parts)  # type: ignore[arg-type]
        return any(
            hmac.compare_digest(given, hmac.new(key, message, hashlib.sha256).hexdigest().encode())
            for key in self.keys
        )
