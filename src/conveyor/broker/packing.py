"""Packing commands straight into hiredis' C serializer, for both faces of redis-py.

redis-py's sync connections copy every argument tuple before calling hiredis, and its asyncio
ones pack every command in Python; in a busy worker or a bulk enqueue that was a fifth of all
time. Anything the fast path cannot take exactly as redis-py would goes through redis-py's own
serializer: commands named in one string ("CLIENT ID"), memoryviews (hiredis reads a strided
view's raw buffer), bytearrays, and values Redis cannot take, which it refuses by name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from redis.connection import HiredisRespSerializer
from redis.utils import HIREDIS_AVAILABLE

_hiredis_pack: Callable[[tuple[Any, ...]], bytes] | None
try:
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # hiredis missing, or older than 2.1
    _hiredis_pack = None

C = TypeVar("C")

#: hiredis is there and can pack: redis-py 5+ reads replies with it whenever it is installed.
AVAILABLE = HIREDIS_AVAILABLE and _hiredis_pack is not None


class HiredisPacker:
    """A redis-py ``command_packer``: ``pack(*args)`` returns the encoded command."""

    _fallback = HiredisRespSerializer()

    def pack(self, *args: Any) -> list[bytes]:
        first = args[0]
        named_in_one = " " in first if isinstance(first, str) else b" " in first
        if not named_in_one and memoryview not in map(type, args):
            try:
                return [_hiredis_pack(args)]  # type: ignore[misc]  # None only if not AVAILABLE
            except TypeError:
                pass
        return self._fallback.pack(*args)


PACKER = HiredisPacker()
_packed: dict[type[Any], type[Any]] = {}


def fits(kwargs: dict[str, Any]) -> bool:
    """Whether clients made with these kwargs can use PACKER: hiredis can pack, and no custom
    encoding is set (the fast path encodes str as UTF-8, redis-py's default)."""
    return AVAILABLE and "encoding" not in kwargs and "encoding_errors" not in kwargs


def client_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Sync client kwargs, with PACKER as redis-py's ``command_packer`` where it fits."""
    return {**kwargs, "command_packer": PACKER} if fits(kwargs) else kwargs


def packing_with_hiredis(cls: type[C]) -> type[C]:
    """An asyncio connection class packing with PACKER (redis-py's asyncio has no option)."""
    if cls not in _packed:

        def pack_command(self: object, *args: Any) -> list[bytes]:
            return PACKER.pack(*args)

        _packed[cls] = type(f"Hiredis{cls.__name__}", (cls,), {"pack_command": pack_command})
    return _packed[cls]
