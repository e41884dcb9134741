"""Progress reports (conveyor.progress, progress.lua) against a real Redis."""

from __future__ import annotations

import time
from typing import Any

import pytest

from conveyor import Conveyor
from conveyor.errors import ConfigurationError
from conveyor.progress import MAX_MESSAGE, read, report


def test_latest_progress_is_read_back_stamped_on_redis_clock(app: Conveyor, r: Any) -> None:
    keys = app.keys("q")
    assert app.broker.call(read(keys, "q:n:1-0")) is None
    app.broker.call(report(keys, "q:n:1-0", 0.2, "step 1 of 5", ttl_ms=60_000))
    at = app.broker.call(report(keys, "q:n:1-0", 0.4, "step 2 of 5", ttl_ms=60_000))
    p = app.broker.call(read(keys, "q:n:1-0"))
    assert p is not None and (p.fraction, p.message, p.at) == (0.4, "step 2 of 5", at)
    s, us = r.time()
    assert abs(p.at - (int(s) * 1000 + int(us) // 1000)) < 5_000
    assert app.broker.call(read(keys, "q:n:2-0")) is None  # another job's is its own


def test_progress_expires_after_its_ttl(app: Conveyor, r: Any) -> None:
    keys = app.keys("q")
    app.broker.call(report(keys, "q:n:1-0", 1, ttl_ms=60_000))
    assert 0 < r.pttl(keys.progress("q:n:1-0")) <= 60_000
    app.broker.call(report(keys, "q:n:1-0", 1, ttl_ms=1))
    time.sleep(0.02)
    assert app.broker.call(read(keys, "q:n:1-0")) is None


def test_progress_key_shares_the_queue_hash_tag(app: Conveyor) -> None:
    keys = app.keys("q")
    assert keys.progress("q:n:1-0").startswith(keys.prefix)


def test_bad_progress_is_refused_naming_what(app: Conveyor) -> None:
    keys = app.keys("q")
    for bad in (-0.1, 1.5, float("nan"), "half", True):
        with pytest.raises(ConfigurationError, match="fraction"):
            report(keys, "q:n:1-0", bad, ttl_ms=1000)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="message"):
        report(keys, "q:n:1-0", 0.5, 42, ttl_ms=1000)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="ttl_ms"):
        report(keys, "q:n:1-0", 0.5, ttl_ms=0)


def test_long_messages_are_cut(app: Conveyor) -> None:
    keys = app.keys("q")
    app.broker.call(report(keys, "q:n:1-0", 0.5, "x" * (MAX_MESSAGE + 50), ttl_ms=60_000))
    p = app.broker.call(read(keys, "q:n:1-0"))
    assert p is not None and len(p.message) == MAX_MESSAGE
