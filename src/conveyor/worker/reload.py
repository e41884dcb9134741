"""`conveyor worker --reload`: notice when the code changes, for development.

A polling watcher, not inotify (or the watchfiles package): it needs no dependency and sees
changes on every filesystem, including the bind mounts of a container where file events do
not arrive. Its cost is one stat per ``.py`` file every half second, fine for a project
tree. Virtual environments, hidden directories, caches and node_modules are skipped.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

POLL_SECONDS = 0.5
SKIPPED = frozenset({"__pycache__", "node_modules", "site-packages", "build", "dist"})


class FileWatcher:
    """Watches the ``.py`` files under some directories; ``changed()`` names one that was
    added, removed or modified since the last look."""

    def __init__(self, roots: Iterable[str | Path], interval: float = POLL_SECONDS) -> None:
        self.roots = [Path(r).resolve() for r in roots]
        self.interval = interval
        self._seen = self._snapshot()
        self._next = time.monotonic() + interval

    def changed(self) -> str | None:
        now = time.monotonic()
        if now < self._next:
            return None
        self._next = now + self.interval
        current = self._snapshot()
        if current == self._seen:
            return None
        paths = set(current) ^ set(self._seen)
        paths |= {p for p in current if p in self._seen and current[p] != self._seen[p]}
        self._seen = current
        return min(paths)

    def _snapshot(self) -> dict[str, tuple[int, int]]:
        """Path -> (mtime in ns, size): an edit within the clock's granularity that
        changes the size is seen too."""
        seen: dict[str, tuple[int, int]] = {}
        for root in self.roots:
            for path in _python_files(root):
                try:
                    st = os.stat(path)
                except OSError:  # removed while we looked: the next look sees it gone
                    continue
                seen[path] = (st.st_mtime_ns, st.st_size)
        return seen


def _python_files(root: Path) -> Iterator[str]:
    for directory, dirs, files in os.walk(root):
        if "pyvenv.cfg" in files:  # a virtual environment: not the project's code
            dirs[:] = []
            continue
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in SKIPPED]
        for name in files:
            if name.endswith(".py"):
                yield os.path.join(directory, name)
