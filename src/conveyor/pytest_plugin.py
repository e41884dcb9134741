"""pytest fixtures for code that uses Conveyor: your app in a namespace of its own, and a real
worker beside the test. Loaded by the ``pytest11`` entry point once Conveyor is installed.

There is no eager mode: jobs go through Redis, the wire format and the worker exactly as in
production, so a test catches what production would (an argument JSON cannot carry, a task
the worker does not register). ``conveyor_worker.run_until_empty()`` is the burst mode: it
returns once every job, retries and delayed jobs included, has ended.

Configuration (``pytest.ini`` / ``pyproject.toml`` ``[tool.pytest.ini_options]``, or flags):

- ``conveyor_app = "myproject.tasks:app"`` (``--conveyor-app``): the app the fixtures bind;
  without it ``conveyor_app`` is a fresh empty app to register tasks on.
- ``--conveyor-url``: the Redis for tests; default the app's own resolution
  (``CONVEYOR_REDIS_URL``, ``REDIS_URL``, localhost). A Redis that does not answer fails
  the test with an error, never a skip.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from .app import Conveyor
from .broker import Broker, ClientOptions
from .errors import ConveyorError, redact_url
from .settings import Leases, WorkerSettings
from .testing import delete_namespace, wait_until_empty, worker_thread
from .worker import Worker
from .worker.loader import load_app


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("conveyor")
    group.addoption("--conveyor-url", default=None, help="Redis URL for Conveyor's test fixtures.")
    group.addoption(
        "--conveyor-app", default=None, help="MODULE:APP the conveyor_app fixture binds."
    )
    parser.addini("conveyor_app", "MODULE:APP the conveyor_app fixture binds.", default="")


class ConveyorWorker:
    """A real worker running on a thread beside the test (the ``conveyor_worker`` fixture)."""

    def __init__(self, app: Conveyor, worker: Worker) -> None:
        self.app = app
        self.worker = worker

    @property
    def queues(self) -> tuple[str, ...]:
        return self.worker.queues

    def run_until_empty(self, timeout: float = 30.0) -> None:
        """Return once the worker's queues hold no job that has not ended: nothing ready,
        running or delayed (retries and scheduled jobs run first). A job delayed beyond
        ``timeout`` raises TimeoutError naming what is left; a worker crash is raised."""
        wait_until_empty(self.app, self.worker.queues, timeout)


@pytest.fixture
def conveyor_app(request: pytest.FixtureRequest) -> Iterator[Conveyor]:
    """Your app (``conveyor_app`` ini option) or a fresh one, in a namespace of this test
    alone whose keys are deleted afterwards; the app's own namespace is restored."""
    config = request.config
    url: str | None = config.getoption("--conveyor-url")
    spec: str = config.getoption("--conveyor-app") or config.getini("conveyor_app")
    namespace = f"test-{secrets.token_hex(4)}"
    if not spec:
        app = Conveyor(url, namespace=namespace)
        try:
            _check_redis(app.url)
            try:
                yield app
            finally:
                delete_namespace(app)
        finally:
            app.close()
        return
    app = load_app(spec)
    original = app.namespace
    original_url = app.url if url else None
    # Rebound inside the try: whatever fails from here on (no Redis, the test itself), the
    # user's app goes back to its own URL and namespace for the tests that follow.
    try:
        app.rebind(url=url, namespace=namespace)
        _check_redis(app.url)
        try:
            yield app
        finally:
            delete_namespace(app)
    finally:
        app.rebind(url=original_url, namespace=original)


@pytest.fixture
def conveyor_worker_settings() -> WorkerSettings:
    """Settings of the ``conveyor_worker`` fixture: short waits so tests stay quick.
    Override this fixture to change them."""
    return WorkerSettings(
        concurrency=4,
        leases=Leases(timeout=2.0),
        block_ms=100,
        promote_every=0.05,
        shutdown_grace=5.0,
    )


@pytest.fixture
def conveyor_worker(
    conveyor_app: Conveyor, conveyor_worker_settings: WorkerSettings
) -> Iterator[ConveyorWorker]:
    """A real worker for ``conveyor_app`` on a thread, stopped gracefully after the test;
    a crash of the worker fails the test."""
    with worker_thread(conveyor_app, conveyor_worker_settings) as worker:
        yield ConveyorWorker(conveyor_app, worker)


def _check_redis(url: str) -> None:
    """Fail the test at once when Redis does not answer (a probe that does not retry: the
    app's own clients keep their reconnect backoff, which would only delay the failure)."""
    probe = Broker(url, ClientOptions(retries=0, connect_timeout=5.0))
    try:
        probe.server_info()
    except ConveyorError as exc:  # its message already says how to start a Redis
        pytest.fail(
            f"Conveyor's fixtures need a Redis: {exc} With pytest, --conveyor-url URL "
            "picks the Redis for tests.",
            pytrace=False,
        )
    except Exception as exc:
        pytest.fail(
            f"Conveyor's fixtures need a Redis; none answered at {redact_url(url)}: {exc}. "
            "Start one, or pass --conveyor-url (or set CONVEYOR_REDIS_URL).",
            pytrace=False,
        )
    finally:
        probe.close()
