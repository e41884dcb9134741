"""Cron: each tick fires exactly once however many workers run; the tick math is pure."""

from __future__ import annotations

import contextlib
import itertools
import json
import threading
import time
from datetime import datetime, timezone
from typing import Any

import pytest

from conveyor import ConfigurationError, Conveyor, WorkerSettings
from conveyor.cron import CronSchedule
from conveyor.cron_marks import fire, mark_key
from tests.conftest import fast, wait_until, worker_thread
from tests.test_cli import cli_env, run_cli


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


# ------------------------------------------------------------------------------ issue 11
def _fired_ticks(app: Conveyor, task: str) -> list[int]:
    pattern = f"{app.namespace}:{{default}}:unique:cron:{task}:*"
    return sorted(int(k.rsplit(b":", 1)[1]) for k in app.broker.client.scan_iter(match=pattern))


def _gap_run(app: Conveyor) -> list[int]:
    """A worker for ~2 s, none for ~3 s (several per-second ticks), a worker for ~2 s."""
    with worker_thread(app, fast()):
        wait_until(lambda: len(_fired_ticks(app, "every_second")) >= 1, 10, "a first tick")
        time.sleep(1.2)
    time.sleep(3.2)
    with worker_thread(app, fast()):
        time.sleep(2.2)
    return _fired_ticks(app, "every_second")


def test_misfire_all_fires_each_tick_missed_while_no_worker_ran(app: Conveyor) -> None:
    ran: list[float] = []

    @app.cron("* * * * * *", misfire="all", misfire_cap=50)
    def every_second() -> None:
        ran.append(time.time())

    ticks = _gap_run(app)
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert len(ticks) >= 6 and set(gaps) == {1000}, f"every second fired once: {gaps}"


def test_misfire_skip_leaves_the_ticks_missed_while_no_worker_ran(app: Conveyor) -> None:
    @app.cron("* * * * * *", grace=0.5)
    def every_second() -> None:
        return None

    ticks = _gap_run(app)
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert max(gaps) >= 3000, f"the stopped seconds were skipped, not replayed: {gaps}"


def test_a_schedule_reads_its_expression_in_its_time_zone(app: Conveyor) -> None:
    @app.cron("0 9 * * *", tz="Europe/Paris")
    def morning() -> None:
        return None

    policy = app.schedules[0].policy
    winter = _ms(datetime(2026, 1, 15, 12, 0, tzinfo=timezone.utc))
    summer = _ms(datetime(2026, 7, 15, 12, 0, tzinfo=timezone.utc))
    assert policy.next_ticks(winter, 1) == [_ms(datetime(2026, 1, 16, 8, 0, tzinfo=timezone.utc))]
    assert policy.next_ticks(summer, 1) == [_ms(datetime(2026, 7, 16, 7, 0, tzinfo=timezone.utc))]


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"tz": "Mars/Olympus"}, "tz="),
        ({"misfire": "sometimes"}, "misfire"),
        ({"misfire": "all", "misfire_cap": 0}, "misfire_cap"),
        ({"grace": -1}, "grace"),
    ],
)
def test_bad_cron_options_are_refused_and_register_nothing(
    app: Conveyor, options: dict[str, Any], needle: str
) -> None:
    with pytest.raises(ConfigurationError, match=needle):

        @app.cron("* * * * *", **options)
        def job() -> None:
            return None

    assert app.tasks == {} and app.schedules == []


def test_cron_ls_lists_schedules_with_last_and_next_ticks(
    app: Conveyor, redis_url: str, namespace: str
) -> None:
    env = cli_env(redis_url, namespace)
    p = run_cli(env, "cron", "ls", "tests.cliapp:cronapp", "--json", "--next", "3")
    assert p.returncode == 0, p.stderr
    rows = {row["task"]: row for row in json.loads(p.stdout)}
    assert set(rows) == {"morning_report", "sync_accounts"}
    morning = rows["morning_report"]
    assert morning["tz"] == "Europe/Paris" and morning["misfire"] == "once"
    assert morning["last_fired"] is None and len(morning["next"]) == 3
    assert all(local.endswith(("+01:00", "+02:00")) for local in morning["next_local"])
    # A mark two periods back: the last fired tick, and one tick missed since.
    sync = rows["sync_accounts"]
    last_due = int(datetime.fromisoformat(sync["last_due"] + "+00:00").timestamp() * 1000)
    fired_at = last_due - 2 * 15 * 60 * 1000
    app.broker.call(
        fire(
            app.keys("default"),
            "normal",
            "sync_accounts",
            [fired_at],
            unique_window_ms=60_000,
            mark_ttl_ms=60_000,
            max_bytes=1 << 20,
        )
    )
    p = run_cli(env, "cron", "ls", "tests.cliapp:cronapp")
    assert p.returncode == 0, p.stderr
    line = next(x for x in p.stdout.splitlines() if "sync_accounts" in x)
    assert "(missed 2)" in line and "all (cap 10)" in line, p.stdout
    assert "never" in next(x for x in p.stdout.splitlines() if "morning_report" in x)


def test_a_removed_schedule_stops_firing_and_its_keys_expire(
    redis_url: str, namespace: str
) -> None:
    with_cron = Conveyor(redis_url, namespace=namespace)
    without = Conveyor(redis_url, namespace=namespace)
    try:

        @with_cron.cron("* * * * * *", grace=5)
        def every_second() -> None:
            return None

        without.task(name="every_second")(lambda: None)  # the task stays, its schedule goes
        with worker_thread(with_cron, fast()):
            wait_until(lambda: len(_fired_ticks(with_cron, "every_second")) >= 2, 10, "ticks")
        fired = _fired_ticks(with_cron, "every_second")
        with worker_thread(without, fast()):
            time.sleep(2.5)
        assert _fired_ticks(with_cron, "every_second") == fired, "no schedule, no new tick"
        r = with_cron.broker.client
        keys = with_cron.keys("default")
        names = [mark_key(keys, "every_second")]
        names += [keys.unique(f"cron:every_second:{t}") for t in fired]
        assert all(r.pttl(n) > 0 for n in names), "every key of the schedule expires by itself"
    finally:
        with_cron.close()
        without.close()
