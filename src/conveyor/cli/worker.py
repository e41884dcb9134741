"""`conveyor worker` and `conveyor demo`: the commands that run jobs."""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from ..logs import FORMATS
from ..settings import WorkerSettings
from ..worker_config import SETTINGS, SettingError, resolve
from .base import Context, errors, main, pass_context

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("conveyor.supervisor")


def settings_options(fn: F) -> F:
    """One option per WorkerSettings field (worker_config.SETTINGS), each also read from its
    CONVEYOR_* variable by worker_config.resolve (not by click: the app's defaults sit
    between the environment and the built-in default, which click cannot express)."""
    builtin = WorkerSettings()
    for s in reversed(SETTINGS):
        names = [s.short, s.flag] if s.short else [s.flag]
        default = _builtin(builtin, s.path)
        help_text = f"{s.help} [env var: {s.env}; built-in default: {default}]"
        if s.type is click.BOOL:
            flag = f"{s.flag}/--no-{s.flag.removeprefix('--')}"
            fn = click.option(flag, s.param, default=None, help=help_text)(fn)
        else:
            fn = click.option(*names, s.param, type=s.type, default=None, help=help_text)(fn)
    return fn


def _builtin(settings: WorkerSettings, path: str) -> str:
    value: Any = settings
    for part in path.split("."):
        value = getattr(value, part)
    if value is None:
        return {"queues": "the app's task queues", "prefetch": "auto"}.get(path, "none")
    return str(value).lower() if isinstance(value, bool) else str(value)


@main.command()
@click.argument("spec")
@click.option(
    "-p",
    "--processes",
    type=int,
    default=1,
    show_default=True,
    envvar="CONVEYOR_PROCESSES",
    show_envvar=True,
    help="Worker processes, under a supervisor that restarts them.",
)
@click.option(
    "--reload",
    is_flag=True,
    help="Development: restart the worker when a .py file under the current directory "
    "changes (one process only).",
)
@click.option(
    "--log-format",
    type=click.Choice(FORMATS),
    default="text",
    show_default=True,
    envvar="CONVEYOR_LOG_FORMAT",
    show_envvar=True,
    help="json: one JSON object per line, for log collectors.",
)
@click.option(
    "--metrics-port",
    default=None,
    metavar="[HOST:]PORT",
    help="Serve Prometheus /metrics here, summed over all worker processes (needs the "
    "metrics extra).",
)
@settings_options
@pass_context
@errors
def worker(
    c: Context,
    /,
    spec: str,
    processes: int,
    reload: bool,
    log_format: str,
    metrics_port: str | None,
    **flags: Any,
) -> None:
    """Run workers for the app at SPEC (module:attribute), e.g. `conveyor worker tasks:app`.

    Each setting is the flag, else its CONVEYOR_* variable, else the app's
    `Conveyor(worker=WorkerSettings(...))`, else the built-in default.
    """
    from ..logs import configure_logging
    from ..worker.runtime import app_queues
    from ..worker.supervisor import Supervisor

    configure_logging(c.log_level, log_format)
    if processes < 1:
        raise click.BadParameter("must be >= 1", param_hint="--processes")
    if reload and processes > 1:
        raise click.UsageError(
            "--reload is for development and runs one worker process; drop --processes "
            f"{processes} (or --reload: production restarts come from a deploy, not a watcher)"
        )
    app = c.app(spec)  # fail here, once, on a bad path, rather than in every child
    try:
        resolved = resolve(app.worker_settings, flags, os.environ)
    except SettingError as exc:
        if exc.source.startswith("--"):
            raise click.BadParameter(exc.reason, param_hint=exc.source) from None
        raise
    settings = resolved.settings
    if settings.queues is None:
        settings = dataclasses.replace(settings, queues=app_queues(app))
    app.broker.server_info()
    log.info(
        "worker settings: %s",
        resolved.describe(),
        extra={"sources": resolved.sources, "settings": dataclasses.asdict(settings)},
    )
    if metrics_port is not None:
        from ..metrics import serve_workers

        serve_workers(app, metrics_port, settings.queues)
    # The children get the URL and namespace resolved here, so every process serves the
    # Redis this one checked, whatever their own import of the app would resolve.
    supervisor = Supervisor(
        spec,
        settings,
        processes,
        url=app.url,
        namespace=app.namespace,
        log_level=c.log_level,
        log_format=log_format,
        reload=reload,
    )
    sys.exit(supervisor.run())


@main.command()
@click.option(
    "--jobs", default=12, show_default=True, help="Documents to push through the pipeline."
)
@pass_context
@errors
def demo(c: Context, jobs: int) -> None:
    """Run a real worker on a document pipeline, on a Redis it finds or starts."""
    from ..demo import run_demo

    sys.exit(run_demo(c.url, documents=jobs))
