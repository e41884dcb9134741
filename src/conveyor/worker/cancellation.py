"""Cancelling asyncio tasks so that they really end.

On Python < 3.12, ``asyncio.wait_for`` (which redis-py uses around every command) can
swallow a ``cancel()`` that arrives just as the inner call completes (CPython gh-86296),
leaving the task running. So we cancel again until every task is done.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]], *, poll: float = 0.1) -> None:
    pending = {t for t in tasks if not t.done()}
    while pending:
        for t in pending:
            t.cancel()
        _, pending = await asyncio.wait(pending, timeout=poll)
