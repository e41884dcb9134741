"""Flask: an extension that runs every task inside the Flask app's application context and
adds ``flask conveyor worker``.

    conveyor = Conveyor()                      # tasks.py: @conveyor.task as usual
    ext = FlaskConveyor(conveyor)

    def create_app() -> Flask:
        app = Flask(__name__)
        ext.init_app(app)                      # config, app context per task, CLI
        return app

    $ flask --app myproject:create_app conveyor worker -c 20   # every `conveyor worker`
                                                              # setting flag, CONVEYOR_* too

Inside a task, ``current_app``, ``g`` and extensions bound to the app (Flask-SQLAlchemy's
session, for one) work as in a request: each run gets an application context of its own,
pushed where the function runs and popped when it returns (teardown handlers run then).
Config read by ``init_app``: ``CONVEYOR_REDIS_URL`` and ``CONVEYOR_NAMESPACE``, when set,
rebind the Conveyor app (the Flask config beats the URL written in code, so one code base
serves each deployment's Redis). Install with ``pip install conveyor-queue[flask]``.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

try:
    from flask import Flask, current_app
    from flask.cli import AppGroup
except ImportError as exc:  # the extra is optional: say how to get it
    raise ImportError("conveyor.flask needs Flask: pip install 'conveyor-queue[flask]'") from exc

from .app import Conveyor
from .cli.worker import settings_options
from .context import JobContext
from .errors import ConfigurationError, ConveyorError
from .worker_config import SettingError, resolve

EXTENSION_KEY = "conveyor"
log = logging.getLogger("conveyor.flask")

NOT_INITIALIZED = (
    "FlaskConveyor has no Flask app: call ext.init_app(flask_app) (or pass the app to "
    "FlaskConveyor(conveyor, flask_app)) in the process that runs the worker"
)


class FlaskConveyor:
    """Binds a Conveyor app to a Flask app. One extension serves one Flask app at a time:
    the app given last to ``init_app`` is the one whose context tasks run in."""

    def __init__(self, conveyor: Conveyor, app: Flask | None = None) -> None:
        self.conveyor = conveyor
        self.flask_app: Flask | None = None
        conveyor.around_task(self._app_context)
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        url = app.config.get("CONVEYOR_REDIS_URL")
        namespace = app.config.get("CONVEYOR_NAMESPACE")
        if url or namespace:
            self.conveyor.rebind(url=url, namespace=namespace)
        app.extensions[EXTENSION_KEY] = self
        app.cli.add_command(conveyor_cli)
        self.flask_app = app

    @contextmanager
    def _app_context(self, job: JobContext) -> Iterator[None]:
        if self.flask_app is None:
            raise ConfigurationError(NOT_INITIALIZED)
        with self.flask_app.app_context():
            yield


def extension(app: Flask) -> FlaskConveyor:
    """The FlaskConveyor registered on ``app`` by ``init_app``."""
    ext = app.extensions.get(EXTENSION_KEY)
    if not isinstance(ext, FlaskConveyor):
        raise ConfigurationError(
            "this Flask app has no Conveyor extension: call FlaskConveyor(conveyor).init_app(app)"
        )
    return ext


conveyor_cli = AppGroup("conveyor", help="Conveyor task queue commands.")


@conveyor_cli.command("worker")
@settings_options
def worker_command(**flags: Any) -> None:
    """Run a worker for the Flask app's Conveyor tasks, each inside an app context.

    Each setting is the flag, else its CONVEYOR_* variable, else the app's
    `Conveyor(worker=WorkerSettings(...))`, else the built-in default, as for `conveyor
    worker`. One process; run several (or a process manager) to scale. Stops gracefully on
    SIGTERM/SIGINT; with --max-jobs or --max-memory it exits with status 3 for the process
    manager to start a fresh one; with --burst it exits 0 once the queues are empty.
    """
    from .logs import configure_logging
    from .worker import serve

    try:
        ext = extension(current_app._get_current_object())  # type: ignore[attr-defined]
        resolved = resolve(ext.conveyor.worker_settings, flags, os.environ)
        ext.conveyor.broker.server_info()  # one line naming the URL when Redis is not there
    except SettingError as exc:
        if exc.source.startswith("--"):
            raise click.BadParameter(exc.reason, param_hint=exc.source) from None
        raise click.ClickException(str(exc)) from None
    except ConveyorError as exc:
        raise click.ClickException(" ".join(str(exc).split())) from None
    configure_logging("INFO")
    log.info("worker settings: %s", resolved.describe(), extra={"sources": resolved.sources})
    serve(ext.conveyor, resolved.settings)
    sys.exit(0)
