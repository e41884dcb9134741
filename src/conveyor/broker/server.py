"""What the Redis server is and can do, read once at start-up (pure parsing, no I/O)."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, Final

from ..errors import UnsupportedServer, redact_url

MIN_VERSION: Final = (6, 2, 0)
log = logging.getLogger("conveyor.server")

# A worker opens several clients on one URL (fetch, leases, transitions), and each reads
# INFO: the eviction warning is said once per process and URL, not once per client.
_warned: set[tuple[str, str]] = set()
_warned_lock = threading.Lock()


@dataclass(frozen=True)
class ServerInfo:
    """Version and settings that change how Conveyor talks to this server."""

    engine: str
    version: tuple[int, int, int]
    maxmemory_policy: str
    maxmemory: int
    mode: str

    @property
    def has_group_lag(self) -> bool:
        """XINFO GROUPS reports entries-read and lag (Redis 7.0+)."""
        return self.version >= (7, 0, 0)

    @property
    def has_acked_trim(self) -> bool:
        """XTRIM/XADD ... ACKED and XACKDEL exist (Redis 8.2+)."""
        return self.engine == "redis" and self.version >= (8, 2, 0)

    @property
    def has_waitaof(self) -> bool:
        """WAITAOF exists (Redis 7.2+; Valkey reports a redis_version of 7.2.4 or newer)."""
        return self.version >= (7, 2, 0)

    @property
    def eviction_risk(self) -> bool:
        return self.maxmemory_policy != "noeviction"


def _version(text: str) -> tuple[int, int, int]:
    parts = [int(p) if p.isdigit() else 0 for p in text.split(".")[:3]]
    while len(parts) < 3:
        parts.append(0)
    return parts[0], parts[1], parts[2]


def parse_info(info: dict[str, Any]) -> ServerInfo:
    """Read INFO (as redis-py parses it) into a ServerInfo.

    INFO is used instead of CONFIG GET because managed services (ElastiCache, Azure) often
    disable CONFIG; INFO carries the same facts.
    """
    engine = "valkey" if "valkey_version" in info else "redis"
    raw_version = str(info.get("valkey_version") or info.get("redis_version") or "0")
    # Valkey also reports redis_version (7.2.4, for compatibility); its own number is newer.
    version = _version(str(info.get("redis_version", raw_version)))
    return ServerInfo(
        engine=engine,
        version=version,
        maxmemory_policy=str(info.get("maxmemory_policy", "noeviction")),
        maxmemory=int(info.get("maxmemory", 0) or 0),
        mode=str(info.get("redis_mode", "standalone")),
    )


def check(info: ServerInfo, url: str) -> None:
    """Refuse servers that cannot run Conveyor; warn loudly (once per process and URL)
    about settings that lose jobs."""
    if info.version < MIN_VERSION:
        have = ".".join(map(str, info.version))
        raise UnsupportedServer(
            f"Redis at {url} is {have}; Conveyor needs 6.2 or newer "
            "(XAUTOCLAIM, XPENDING IDLE, XTRIM MINID). Upgrade Redis or use Valkey."
        )
    if info.eviction_risk and _first_time(url, info.maxmemory_policy):
        log.warning(
            "Redis at %s has maxmemory-policy %r: at its memory limit Redis may evict queue "
            "keys and silently lose jobs. Set `maxmemory-policy noeviction` for any Redis that "
            "holds queues.",
            redact_url(url),
            info.maxmemory_policy,
        )


def _first_time(url: str, policy: str) -> bool:
    """True once per process for each URL and policy (a changed policy is worth saying)."""
    with _warned_lock:
        if (url, policy) in _warned:
            return False
        _warned.add((url, policy))
        return True
