"""Settings objects reject bad values when they are made, naming the field at fault."""

from __future__ import annotations

import math
from typing import Any

import pytest

from conveyor import (
    Backoff,
    ConfigurationError,
    Conveyor,
    Leases,
    Retention,
    TaskOptions,
    WorkerSettings,
)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        pytest.param({"queue": "a:b"}, "queue", id="queue-colon"),
        pytest.param({"queue": ""}, "queue", id="queue-empty"),
        pytest.param({"priority": "urgent"}, "priority", id="priority-unknown"),
        pytest.param({"priority": "HIGH"}, "priority", id="priority-case"),
        pytest.param({"retries": -1}, "retries", id="retries-negative"),
        pytest.param({"timeout": 0}, "timeout", id="timeout-zero"),
        pytest.param({"timeout": -1.5}, "timeout", id="timeout-negative"),
        pytest.param({"max_deliveries": 0}, "max_deliveries", id="max-deliveries-zero"),
        pytest.param({"max_deliveries": -3}, "max_deliveries", id="max-deliveries-negative"),
        pytest.param({"result_ttl": -1}, "result_ttl", id="result-ttl-negative"),
    ],
)
def test_task_options_reject_bad_values(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        TaskOptions(**kwargs)
    assert field in str(info.value)


def test_task_options_defaults_and_edges_are_accepted() -> None:
    o = TaskOptions()
    assert (o.queue, o.priority, o.retries, o.timeout, o.max_deliveries) == (
        "default",
        "normal",
        3,
        None,
        5,
    )
    TaskOptions(retries=0, result_ttl=0, max_deliveries=1, timeout=0.001, priority="low")


def test_task_decorator_rejects_bad_options_naming_the_field() -> None:
    app = Conveyor("redis://127.0.0.1:6379/0", namespace="test-settings")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"retries": -1}, "retries"),
        ({"priority": "urgent"}, "priority"),
        ({"timeout": 0}, "timeout"),
        ({"max_deliveries": 0}, "max_deliveries"),
        ({"backoff": 0}, "base"),
        ({"backoff": -2.0}, "base"),
    ]
    for kwargs, field in cases:
        with pytest.raises(ConfigurationError) as info:

            @app.task(**kwargs)
            def f() -> None: ...

        assert field in str(info.value), kwargs
    assert app.tasks == {}


def test_task_using_rejects_unknown_priority() -> None:
    app = Conveyor("redis://127.0.0.1:6379/0", namespace="test-settings")

    @app.task
    def f() -> None: ...

    with pytest.raises(ConfigurationError) as info:
        f.using(priority="urgent")
    assert "priority" in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        pytest.param({"timeout": 0}, "timeout", id="timeout-zero"),
        pytest.param({"timeout": -1}, "timeout", id="timeout-negative"),
        pytest.param({"timeout": 0.1}, "timeout", id="timeout-too-short"),
        pytest.param({"timeout": 0.29}, "timeout", id="timeout-just-too-short"),
    ],
)
def test_leases_reject_bad_timeouts(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        Leases(**kwargs)
    assert field in str(info.value)


@pytest.mark.parametrize("reclaim_every", [0, -1, -0.5])
def test_leases_reject_non_positive_reclaim_interval(reclaim_every: float) -> None:
    # A negative interval would make the reclaim loop spin without sleeping.
    with pytest.raises(ConfigurationError) as info:
        Leases(timeout=1.0, reclaim_every=reclaim_every)
    assert "reclaim_every" in str(info.value)


def test_leases_derived_intervals() -> None:
    lease = Leases(timeout=0.3)
    assert lease.renew_every == pytest.approx(0.1)
    assert lease.reclaim_interval == pytest.approx(0.15)
    assert Leases(timeout=3, reclaim_every=0.5).reclaim_interval == 0.5


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        pytest.param({"keep_count": -1}, "keep_count", id="keep-count-negative"),
        pytest.param({"keep_seconds": -1}, "keep_seconds", id="keep-seconds-negative"),
        pytest.param({"trim_every": 0}, "trim_every", id="trim-every-zero"),
        pytest.param({"trim_every": -1}, "trim_every", id="trim-every-negative"),
        pytest.param({"max_trim": 0}, "max_trim", id="max-trim-zero"),
        pytest.param({"max_trim": -10}, "max_trim", id="max-trim-negative"),
    ],
)
def test_retention_rejects_bad_values(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        Retention(**kwargs)
    assert field in str(info.value)


def test_retention_accepts_zero_keep_rules() -> None:
    Retention(keep_count=0, keep_seconds=0)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        pytest.param({"queues": ()}, "queues", id="no-queues"),
        pytest.param({"queues": ("ok", "bad queue")}, "queue", id="bad-queue-name"),
        pytest.param({"concurrency": 0}, "concurrency", id="concurrency-zero"),
        pytest.param({"concurrency": -4}, "concurrency", id="concurrency-negative"),
        pytest.param({"shutdown_grace": -1}, "shutdown_grace", id="grace-negative"),
        pytest.param({"block_ms": 0}, "block_ms", id="block-zero"),
        pytest.param({"block_ms": 10_001}, "block_ms", id="block-too-long"),
        pytest.param({"promote_every": 0}, "promote_every", id="promote-zero"),
        pytest.param({"promote_every": -1}, "promote_every", id="promote-negative"),
    ],
)
def test_worker_settings_reject_bad_values(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        WorkerSettings(**kwargs)
    assert field in str(info.value)


@pytest.mark.parametrize("size", [0, -1])
def test_worker_settings_reject_non_positive_max_payload_bytes(size: int) -> None:
    # With 0 every job, however small, would be dead-lettered as malformed.
    with pytest.raises(ConfigurationError) as info:
        WorkerSettings(max_payload_bytes=size)
    assert "max_payload_bytes" in str(info.value)


def test_worker_settings_do_not_split_a_single_queue_string_into_letters() -> None:
    # queues="default" is an easy slip; it must not become queues d, e, f, a, u, l, t.
    try:
        s = WorkerSettings(queues="default")  # type: ignore[arg-type]
    except ConfigurationError as exc:
        assert "queues" in str(exc)
    else:
        assert tuple(s.queues) == ("default",)


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: Leases(timeout=math.nan), id="leases-timeout-nan"),
        pytest.param(lambda: TaskOptions(timeout=math.nan), id="task-timeout-nan"),
        pytest.param(lambda: Retention(trim_every=math.nan), id="trim-every-nan"),
        pytest.param(lambda: WorkerSettings(promote_every=math.nan), id="promote-every-nan"),
        pytest.param(lambda: Backoff(base=math.nan), id="backoff-base-nan"),
    ],
)
def test_nan_durations_are_rejected(make: Any) -> None:
    with pytest.raises(ConfigurationError):
        make()


def test_valid_worker_settings_are_kept() -> None:
    s = WorkerSettings(
        queues=("a", "b"),
        concurrency=1,
        leases=Leases(timeout=1.0),
        retention=Retention(keep_count=5, trim_every=0.1),
        shutdown_grace=0,
        block_ms=1,
        promote_every=0.01,
    )
    assert s.queues == ("a", "b")
    assert s.leases.timeout == 1.0
    assert s.retention.keep_count == 5
    assert WorkerSettings(block_ms=10_000).block_ms == 10_000
