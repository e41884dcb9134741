"""Prometheus metrics: a real `conveyor worker -p 2 --metrics-port` scraped during a run, and
the queue gauges read from Redis."""

from __future__ import annotations

import contextlib
import socket
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from conveyor import ConfigurationError, Conveyor, JobFailed
from conveyor import metrics as conveyor_metrics
from tests.conftest import fast, wait_until, worker_thread
from tests.telemetryapp import register_tasks
from tests.test_cli import cli_env, cli_worker, run_cli

APP = "tests.telemetryapp:app"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> dict[tuple[str, str], float]:
    """Samples by (name, task or queue label) from a live /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        body = reply.read().decode()
    out: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            if s.name.startswith("conveyor_"):
                key = (s.name, s.labels.get("task") or s.labels.get("queue") or "")
                if "le" not in s.labels:
                    out[key] = out.get(key, 0.0) + s.value
    return out


def counters(samples: dict[tuple[str, str], float]) -> dict[tuple[str, str], int]:
    return {
        (name.removeprefix("conveyor_jobs_").removesuffix("_total"), task): int(v)
        for (name, task), v in samples.items()
        if name.startswith("conveyor_jobs_") and name.endswith("_total")
    }


def test_counters_of_two_worker_processes_equal_the_ledger(
    redis_url: str, namespace: str, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    env = {**cli_env(redis_url, namespace), "TELEMETRY_LEDGER": str(ledger)}
    port = free_port()
    producer = Conveyor(redis_url, namespace=namespace)
    register_tasks(producer)
    conveyor_metrics.instrument(producer)
    before = counters(scrape_local(producer))
    with cli_worker(
        env,
        tmp_path / "worker.log",
        APP,
        "-p",
        "2",
        "-c",
        "10",
        "--metrics-port",
        str(port),
        processes=2,
    ) as w:
        ok, flaky, doomed = (producer.tasks[n] for n in ("ok", "flaky", "doomed"))
        jobs = [ok.enqueue(i) for i in range(900)]
        jobs += [flaky.enqueue(i) for i in range(80)]
        jobs += [doomed.enqueue(i) for i in range(20)]
        during = scrape(port)  # while the workers drain: served, and never ahead of Redis
        assert ("conveyor_queue_ready_jobs", "default") in during
        for job in jobs:
            with contextlib.suppress(JobFailed):
                job.result(30)
        lines = [line.split() for line in ledger.read_text().splitlines()]
        want = Counter()
        for what, task, _, _ in lines:
            want[{"start": "started", "ok": "succeeded", "fail": "failed"}[what], task] += 1
        want["retried", "flaky"] = 80
        want["retried", "doomed"] = 20
        want["dead", "doomed"] = 20

        def matches() -> bool:
            got = counters(scrape(port))
            return all(got.get(k, 0) == v for k, v in want.items())

        wait_until(matches, 10, lambda: f"counters {counters(scrape(port))} == {want}")
        final = scrape(port)
        got = counters(final)
        assert all(v <= got[k] for k, v in counters(during).items())
        assert w.proc.poll() is None
    assert want["started", "ok"] == 900 and want["started", "flaky"] == 160
    assert want["started", "doomed"] == 40 and want["failed", "doomed"] == 40
    for kind in ("started", "succeeded", "failed", "retried", "dead", "cancelled"):
        for task in ("ok", "flaky", "doomed"):
            assert got.get((kind, task), 0) == want.get((kind, task), 0), (kind, task)
    assert sum(v for (k, _), v in got.items() if k == "enqueued") == 0  # not the workers'
    # Enqueues are counted by the process that made them (this one).
    after = counters(scrape_local(producer))
    enqueued = {
        t: after[("enqueued", t)] - before.get(("enqueued", t), 0)
        for t in ("ok", "flaky", "doomed")
    }
    assert enqueued == {"ok": 900, "flaky": 80, "doomed": 20}
    assert final[("conveyor_queue_dead_jobs", "default")] == 20
    assert final[("conveyor_queue_ready_jobs", "default")] == 0
    assert final[("conveyor_job_run_seconds_count", "ok")] == 900
    assert final[("conveyor_job_queue_wait_seconds_count", "flaky")] == 160


def scrape_local(app: Conveyor) -> dict[tuple[str, str], float]:
    body, _ = conveyor_metrics.exposition(app)
    out: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            if s.name.startswith("conveyor_jobs_") and s.name.endswith("_total"):
                out[(s.name, s.labels["task"])] = s.value
    return out


def test_a_metrics_port_in_use_is_a_clear_error(
    redis_url: str, namespace: str, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        p = run_cli(
            cli_env(redis_url, namespace), "worker", APP, "--metrics-port", f"127.0.0.1:{port}"
        )
    assert p.returncode == 1, p.stderr
    assert f"cannot serve metrics on 127.0.0.1:{port}" in p.stderr
    assert "Traceback" not in p.stderr
    p = run_cli(cli_env(redis_url, namespace), "worker", APP, "--metrics-port", "nine")
    assert p.returncode == 1 and "not a port or host:port: 'nine'" in p.stderr


def test_queue_gauges_read_redis(app: Conveyor) -> None:
    register_tasks(app)
    for i in range(7):
        app.tasks["ok"].enqueue(i)
    app.tasks["ok"].enqueue_in(600, 99)
    body, content_type = conveyor_metrics.exposition(app)
    assert content_type.startswith("text/plain")
    samples = {
        (s.name, s.labels.get("queue", "")): s.value
        for f in text_string_to_metric_families(body.decode())
        for s in f.samples
    }
    assert samples[("conveyor_queue_ready_jobs", "default")] == 7
    assert samples[("conveyor_queue_delayed_jobs", "default")] == 1
    assert samples[("conveyor_queue_running_jobs", "default")] == 0
    assert samples[("conveyor_queue_dead_jobs", "default")] == 0
    assert samples[("conveyor_queue_lag_seconds", "default")] >= 0
    assert samples[("conveyor_workers_live", "")] == 0


def test_serve_refuses_a_port_in_use(app: Conveyor) -> None:
    server = conveyor_metrics.serve(app, free_port(), host="127.0.0.1")
    try:
        port = server.server_address[1]
        with pytest.raises(ConfigurationError, match=f"cannot serve metrics on 127.0.0.1:{port}"):
            conveyor_metrics.serve(app, port, host="127.0.0.1")
        assert ("conveyor_workers_live", "") in scrape(port)
    finally:
        server.shutdown()
        server.server_close()


def test_cancelled_queued_and_delayed_jobs_and_expired_jobs_are_counted(app: Conveyor) -> None:
    """A cancel that ends a queued or delayed job counts in the cancelling process, once
    (the worker that skips the entry counts nothing); an expired job counts ``expired``."""
    conveyor_metrics.instrument(app)

    @app.task(name=f"counted_{app.namespace}")
    async def counted() -> None:
        return None

    @app.task(name=f"stale_{app.namespace}", expires=0.05)
    async def stale() -> None:
        return None

    def value(kind: str, task: str) -> float:
        labels = {"queue": "default", "task": task}
        return REGISTRY.get_sample_value(f"conveyor_jobs_{kind}_total", labels) or 0.0

    counted.enqueue().cancel()
    counted.enqueue_in(60).cancel()
    assert value("cancelled", counted.name) == 2
    expired = stale.enqueue()
    time.sleep(0.2)
    with worker_thread(app, fast()) as worker:
        wait_until(lambda: value("expired", stale.name) == 1, 5, "the expired count")
        wait_until(lambda: worker.counts.get("skipped") == 1, 5, "the cancelled entry skipped")
    assert value("cancelled", counted.name) == 2
    assert value("started", counted.name) == value("started", stale.name) == 0
    assert expired.status().value == "expired"
