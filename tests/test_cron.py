"""Cron: each tick fires exactly once however many workers run; the tick math is pure."""

from __future__ import annotations

import contextlib
import threading
import time
from datetime import datetime, timezone

import pytest

from conveyor import ConfigurationError, Conveyor, WorkerSettings
from conveyor.cron import CronSchedule
from tests.conftest import worker_thread


def _ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def test_due_tick_is_the_latest_one_within_grace(app: Conveyor) -> None:
    @app.task
    def noop() -> None:
        return None

    schedule = CronSchedule("*/5 * * * *", noop, grace=60)
    now = datetime(2026, 1, 1, 12, 5, 30, tzinfo=timezone.utc)
    firing = schedule.policy.to_fire(None, _ms(now))
    assert firing.ticks == (_ms(datetime(2026, 1, 1, 12, 5, tzinfo=timezone.utc)),)
    late = datetime(2026, 1, 1, 12, 7, 0, tzinfo=timezone.utc)
    assert schedule.policy.to_fire(None, _ms(late)).ticks == (), "missed past grace: skipped"


def test_invalid_cron_expression_is_rejected_and_not_registered(app: Conveyor) -> None:
    with pytest.raises(ConfigurationError, match="cron expression"):

        @app.cron("every tuesday")
        def bad() -> None:
            return None

    assert "bad" not in app.tasks


@pytest.mark.parametrize("expression", ["every tuesday", "* * * *", "* * * * * * *"])
def test_invalid_cron_expression_message_names_five_or_six_fields(
    app: Conveyor, expression: str
) -> None:
    with pytest.raises(ConfigurationError) as raised:
        CronSchedule(expression, app.task(lambda: None, name="tick"))
    message = str(raised.value)
    assert expression in message
    assert "five fields" in message and "six with seconds last" in message, message


def test_six_field_expression_with_seconds_is_accepted_and_ticks_on_seconds(
    app: Conveyor,
) -> None:
    schedule = CronSchedule("*/5 * * * * 30", app.task(lambda: None, name="tock"), grace=60)
    firing = schedule.policy.to_fire(
        None, _ms(datetime(2026, 1, 1, 12, 5, 40, tzinfo=timezone.utc))
    )
    assert firing.ticks == (_ms(datetime(2026, 1, 1, 12, 5, 30, tzinfo=timezone.utc)),)


def test_each_tick_fires_once_with_three_workers(app: Conveyor) -> None:
    runs: list[float] = []
    lock = threading.Lock()

    # Six fields: croniter's last field is seconds, so this ticks every second.
    @app.cron("* * * * * *", grace=5)
    def heartbeat() -> None:
        with lock:
            runs.append(time.time())

    settings = WorkerSettings(concurrency=2)
    with contextlib.ExitStack() as stack:
        for _ in range(3):
            stack.enter_context(worker_thread(app, settings))
        time.sleep(4.5)
    ticks = list(
        app.broker.client.scan_iter(match=f"{app.namespace}:{{default}}:unique:cron:heartbeat:*")
    )
    assert len(ticks) >= 3, f"expected a tick per second, saw {len(ticks)}"
    entries = app.broker.client.xrange(app.keys("default").stream("normal"))
    # Entries carrying an id are copies handed back at shutdown, not new jobs.
    added = sum(1 for _, fields in entries if b"id" not in fields)
    assert added == len(ticks), f"{added} jobs added for {len(ticks)} ticks"
    # The last tick may still be queued when the workers stop; none may run twice.
    assert len(ticks) - 1 <= len(runs) <= len(ticks), f"{len(runs)} runs, {len(ticks)} ticks"
