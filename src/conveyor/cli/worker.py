"""`conveyor worker` and `conveyor demo`: the commands that run jobs."""

from __future__ import annotations

import sys

import click

from ..settings import Leases, WorkerSettings
from .base import Context, errors, main, pass_context


@main.command()
@click.argument("spec")
@click.option(
    "-c", "--concurrency", default=10, show_default=True, help="Jobs at once per process."
)
@click.option("-p", "--processes", default=1, show_default=True, help="Worker processes.")
@click.option("-q", "--queues", default=None, help="Comma-separated queues (default: the app's).")
@click.option("--lease", default=30.0, show_default=True, help="Lease timeout in seconds.")
@click.option("--grace", default=30.0, show_default=True, help="Shutdown grace in seconds.")
@click.option(
    "--pool-size",
    default=2,
    show_default=True,
    help="Subprocesses per worker process for executor='process' tasks (started only if any).",
)
@pass_context
@errors
def worker(
    c: Context,
    spec: str,
    concurrency: int,
    processes: int,
    queues: str | None,
    lease: float,
    grace: float,
    pool_size: int,
) -> None:
    """Run workers for the app at SPEC (module:attribute), e.g. `conveyor worker tasks:app`."""
    from ..logs import configure_logging
    from ..worker.supervisor import Supervisor

    configure_logging(c.log_level)
    if processes < 1:
        raise click.BadParameter("must be >= 1", param_hint="--processes")
    if pool_size < 1:
        raise click.BadParameter("must be >= 1", param_hint="--pool-size")
    app = c.app(spec)  # fail here, once, on a bad path, rather than in every child
    app.broker.server_info()
    names = tuple(q.strip() for q in queues.split(",") if q.strip()) if queues else None
    if names is None:
        from ..worker.runtime import app_queues

        names = app_queues(app)
    settings = WorkerSettings(
        queues=names,
        concurrency=concurrency,
        leases=Leases(timeout=lease),
        shutdown_grace=grace,
        pool_size=pool_size,
    )
    # The children get the URL and namespace resolved here, so every process serves the
    # Redis this one checked, whatever their own import of the app would resolve.
    supervisor = Supervisor(
        spec, settings, processes, url=app.url, namespace=app.namespace, log_level=c.log_level
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
