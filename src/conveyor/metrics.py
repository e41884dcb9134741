"""Prometheus metrics: job counters and timings from the hooks, queue gauges read from Redis.

Needs the ``metrics`` extra (``pip install conveyor-queue[metrics]``, prometheus-client).

- ``conveyor_jobs_{enqueued,started,succeeded,failed,retried,dead,cancelled,expired}_total
  {queue,task}``: counted where they happen (enqueued in the producing process, or in the
  worker for cron fires; cancelled in the cancelling process for a queued or delayed job,
  in the worker for a running one; the rest in the worker). ``failed`` counts failed
  attempts; each is then ``retried`` or ``dead``. ``expired``: ended by the ``expires``
  option before it started.
- ``conveyor_job_run_seconds`` and ``conveyor_job_queue_wait_seconds`` histograms
  ``{queue,task}``: a run (succeeded or failed) and the time from ready to start.
- ``conveyor_queue_{ready,running,delayed,dead}_jobs{queue}``, ``conveyor_queue_lag_seconds
  {queue}`` (age of the oldest job not yet delivered) and ``conveyor_workers_live``: read
  from Redis when scraped, so every process that serves them shows the same numbers.

``instrument(app)`` turns the counters on in a process; ``serve(app, port)`` also serves
``/metrics`` from a thread; ``asgi_app(app)`` and ``exposition(app)`` are for mounting it in
a web app (the dashboard). ``conveyor worker --metrics-port`` runs its processes in
prometheus_client's multiprocess mode: each child writes its counters to files in a private
directory and the supervisor serves their sum on one port (see ``serve_workers``), so a
scrape never sees one child's numbers alone, and a restarted child's counts are kept.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Final, cast

from .broker import Call, command, text
from .errors import ConfigurationError, ConveyorError
from .hooks import EVENTS, JobEvent, Middleware
from .keys import GROUP

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import Collector

    from .app import Conveyor

log = logging.getLogger("conveyor.metrics")

#: One counter per kind of event hooks see: a new kind is counted as soon as it exists.
COUNTED: Final = EVENTS
LABELS: Final = ("queue", "task")
#: Run times from 1 ms to 10 min, queue waits from 1 ms to an hour.
RUN_BUCKETS: Final = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 600)
WAIT_BUCKETS: Final = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600)
#: Set by ``serve_workers`` for the worker processes (prometheus_client reads it at import).
MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"


def _prometheus() -> Any:
    try:
        import prometheus_client
    except ImportError:
        raise ConfigurationError(
            "metrics need prometheus-client: pip install 'conveyor-queue[metrics]'"
        ) from None
    return prometheus_client


class JobMetrics(Middleware):
    """The counters and histograms of this process (one set, in the default registry)."""

    _made: JobMetrics | None = None

    def __init__(self) -> None:
        p = _prometheus()
        self.counters = {
            kind: p.Counter(f"conveyor_jobs_{kind}", f"Jobs {kind}.", LABELS) for kind in COUNTED
        }
        self.run = p.Histogram(
            "conveyor_job_run_seconds",
            "Run time of an attempt (succeeded or failed).",
            LABELS,
            buckets=RUN_BUCKETS,
        )
        self.wait = p.Histogram(
            "conveyor_job_queue_wait_seconds",
            "Time from ready (enqueued, or due) to started.",
            LABELS,
            buckets=WAIT_BUCKETS,
        )

        #: labelled children by (metric, queue, task): ``labels()`` checks and locks on
        #: every call, a dict lookup does not (it was most of the per-job cost)
        self._children: dict[tuple[str, str, str], Any] = {}

    def _child(self, metric: str, queue: str, task: str) -> Any:
        key = (metric, queue, task)
        child = self._children.get(key)
        if child is None:
            parent = self.counters.get(metric) or (self.run if metric == "run" else self.wait)
            child = self._children[key] = parent.labels(queue, task)
        return child

    @classmethod
    def get(cls) -> JobMetrics:
        """The process's one set (prometheus_client refuses a name registered twice)."""
        if cls._made is None:
            cls._made = cls()
        return cls._made

    def _count(self, event: JobEvent) -> None:
        self._child(event.kind, event.queue, event.task).inc()

    enqueued = retried = dead = cancelled = expired = _count

    def started(self, event: JobEvent) -> None:
        self._child("started", event.queue, event.task).inc()
        if event.queue_wait is not None:
            self._child("wait", event.queue, event.task).observe(event.queue_wait)

    def succeeded(self, event: JobEvent) -> None:
        self._child(event.kind, event.queue, event.task).inc()
        if event.duration is not None:
            self._child("run", event.queue, event.task).observe(event.duration)

    failed = succeeded


def instrument(app: Conveyor) -> JobMetrics:
    """Count the app's jobs in this process's Prometheus registry (idempotent)."""
    metrics = JobMetrics.get()
    app.use(metrics)
    return metrics


# -- gauges read from Redis at scrape time ------------------------------------------------------
class QueueGauges:
    """A collector that reads each queue's state from Redis when scraped (a few commands per
    queue, none per job)."""

    def __init__(self, app: Conveyor, queues: Sequence[str] | None = None) -> None:
        self.app = app
        self.queues = tuple(queues) if queues else None

    def _queues(self) -> list[str]:
        if self.queues:
            return list(self.queues)
        found = {t.options.queue for t in self.app.tasks.values()}
        return sorted(found or {self.app.default_queue})

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        from . import stats

        families = {
            name: GaugeMetricFamily(f"conveyor_queue_{name}", doc, labels=["queue"])
            for name, doc in (
                ("ready_jobs", "Jobs in the ready streams not yet delivered (the lag)."),
                ("running_jobs", "Jobs delivered and not yet acknowledged (pending)."),
                ("delayed_jobs", "Jobs waiting for their due time (delays, retries, limits)."),
                ("dead_jobs", "Entries in the dead-letter stream."),
                ("lag_seconds", "Age of the oldest job not yet delivered (0 when none)."),
            )
        }
        try:
            now_ms = _redis_ms(self.app)
            for q in self._queues():
                s = stats.queue_stats(self.app, q)
                families["ready_jobs"].add_metric([q], s.ready)
                families["running_jobs"].add_metric([q], s.running)
                families["delayed_jobs"].add_metric([q], s.delayed)
                families["dead_jobs"].add_metric([q], s.dead)
                oldest = _oldest_undelivered_ms(self.app, q) if s.ready else None
                lag = max(0.0, (now_ms - oldest) / 1000) if oldest is not None else 0.0
                families["lag_seconds"].add_metric([q], lag)
            live = len(stats.live_workers(self.app))
        except (ConveyorError, OSError) as exc:
            log.warning("queue gauges not read from Redis: %s", exc)
            return
        yield from families.values()
        workers = GaugeMetricFamily("conveyor_workers_live", "Live workers of the namespace.")
        workers.add_metric([], live)
        yield workers


def _redis_ms(app: Conveyor) -> int:
    seconds, micros = cast(tuple[bytes, bytes], app.broker.call(command("TIME")))
    return int(seconds) * 1000 + int(micros) // 1000


def _oldest_undelivered_ms(app: Conveyor, queue: str) -> int | None:
    """Time (ms, from its entry id) of the oldest entry no worker of the group has read."""
    keys = app.keys(queue)
    replies = app.broker.call_many(
        [command("XINFO", "GROUPS", s, accepts_errors=True) for s in keys.streams]
    )
    reads: list[Call[Any]] = []
    for stream, reply in zip(keys.streams, replies, strict=True):
        last = "0-0"
        for g in reply if isinstance(reply, list) else []:
            info = g if isinstance(g, dict) else dict(zip(g[::2], g[1::2], strict=True))
            info = {text(k): v for k, v in info.items()}
            if text(info.get("name", b"")) == GROUP:
                last = text(info.get("last-delivered-id", b"0-0"))
        reads.append(command("XRANGE", stream, f"({last}", "+", "COUNT", 1))
    oldest = None
    for entries in app.broker.call_many(reads):
        if entries:
            ms = int(text(entries[0][0]).split("-", 1)[0])
            oldest = ms if oldest is None else min(oldest, ms)
    return oldest


# -- exposition ------------------------------------------------------------------------------
class _Exposed:
    """What /metrics shows: this process's registry (or the worker processes' files in
    multiprocess mode) and the queue gauges."""

    def __init__(self, app: Conveyor, queues: Sequence[str] | None, multiprocess: bool) -> None:
        p = _prometheus()
        if multiprocess:
            from prometheus_client import multiprocess as mp

            self.jobs = p.CollectorRegistry()
            mp.MultiProcessCollector(self.jobs)  # type: ignore[no-untyped-call]
        else:
            self.jobs = p.REGISTRY
        self.gauges = QueueGauges(app, queues)

    def collect(self) -> Iterator[Metric]:
        yield from self.jobs.collect()
        yield from self.gauges.collect()


def collector(app: Conveyor, queues: Sequence[str] | None = None) -> Collector:
    """Everything /metrics shows for the app, as one prometheus_client collector."""
    return _Exposed(app, queues, multiprocess=MULTIPROC_ENV in os.environ)


def exposition(app: Conveyor, queues: Sequence[str] | None = None) -> tuple[bytes, str]:
    """The body of a /metrics response and its content type."""
    p = _prometheus()
    return p.generate_latest(collector(app, queues)), p.CONTENT_TYPE_LATEST


def asgi_app(app: Conveyor, queues: Sequence[str] | None = None) -> Any:
    """An ASGI app serving the metrics (mount it at /metrics); counts this process's jobs."""
    instrument(app)
    return _prometheus().make_asgi_app(collector(app, queues))


def serve(
    app: Conveyor, port: int, host: str = "0.0.0.0", queues: Sequence[str] | None = None
) -> Any:
    """Count this process's jobs and serve /metrics on ``host:port`` from a thread; returns
    the server (``.shutdown()`` stops it). A port in use raises ConfigurationError."""
    instrument(app)
    return _listen(collector(app, queues), host, port)


def _listen(what: Collector, host: str, port: int) -> Any:
    try:
        server, _ = _prometheus().start_http_server(port, host, what)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot serve metrics on {host}:{port}: {exc.strerror or exc} (is another "
            "process using that port? pick another with --metrics-port)"
        ) from None
    return server


def parse_address(value: str) -> tuple[str, int]:
    """``PORT`` or ``HOST:PORT`` (all interfaces when no host is given)."""
    host, _, port = value.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        number = -1
    if not 0 < number < 65536:
        raise ConfigurationError(f"not a port or host:port: {value!r}")
    return host.strip("[]") or "0.0.0.0", number


def serve_workers(app: Conveyor, address: str, queues: Sequence[str] | None = None) -> Any:
    """For `conveyor worker --metrics-port`: serve the sum of the worker processes' metrics.

    Call it before the worker processes start: it makes a private directory, names it in
    PROMETHEUS_MULTIPROC_DIR (inherited by the children, which count in files there) and
    serves /metrics from a thread of this process. The directory goes when this process
    exits. Counters of a child that died stay in the sum, as a counter should.
    """
    host, port = parse_address(address)
    _prometheus()
    directory = tempfile.mkdtemp(prefix="conveyor-metrics-")
    atexit.register(shutil.rmtree, directory, True)
    os.environ[MULTIPROC_ENV] = directory
    from .worker.lifecycle import METRICS_ENV

    os.environ[METRICS_ENV] = "1"
    try:
        server = _listen(_Exposed(app, queues, multiprocess=True), host, port)
    except ConfigurationError:
        shutil.rmtree(directory, True)
        del os.environ[MULTIPROC_ENV], os.environ[METRICS_ENV]
        raise
    log.info("serving metrics on http://%s:%d/metrics", host, port)
    return server
