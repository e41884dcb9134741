"""`conveyor enqueue` and `conveyor status`: add one job, and follow one job by its id."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click

from ..errors import redact_url
from ..job import JobState
from .base import Context, app_option, errors, main, parse_json, pass_context


@main.command()
@click.argument("spec")
@click.argument("task_name")
@click.option("--args", "args_json", default=None, help="Positional arguments as a JSON array.")
@click.option("--kwargs", "kwargs_json", default=None, help="Keyword arguments as a JSON object.")
@click.option("--delay", type=float, default=None, help="Run after this many seconds.")
@click.option("--queue", default=None, help="Override the task's queue.")
@click.option("--priority", type=click.Choice(["high", "normal", "low"]), default=None)
@click.option("--wait", type=float, default=None, help="Wait this long for the result.")
@pass_context
@errors
def enqueue(
    c: Context,
    spec: str,
    task_name: str,
    args_json: str | None,
    kwargs_json: str | None,
    delay: float | None,
    queue: str | None,
    priority: str | None,
    wait: float | None,
) -> None:
    """Enqueue TASK_NAME of the app at SPEC and print the job id."""
    args = parse_json("args", args_json, [])
    kwargs = parse_json("kwargs", kwargs_json, {})
    app = c.app(spec)
    task = app.get_task(task_name).using(queue=queue, priority=priority)
    # The worker checks arguments against the signature too, but only when the job runs:
    # a mismatch found here costs the user one line instead of a dead letter later.
    task.bind(args, kwargs)
    job = task.enqueue_in(delay, *args, **kwargs) if delay else task.enqueue(*args, **kwargs)
    click.echo(job.id)
    if wait is not None:
        click.echo(json.dumps(job.result(timeout=wait)))


@main.command()
@click.argument("job_id")
@app_option
@pass_context
@errors
def status(c: Context, job_id: str, spec: str | None) -> None:
    """Show where a job is and, once it ended, its result or error."""
    app = c.app(spec)
    info = app.job(job_id).info()
    rec = info.record
    out: dict[str, Any] = {"id": info.id, "state": info.state.value}
    if info.due_ms is not None:
        out["due_in_s"] = round(max(0, info.due_ms / 1000 - time.time()), 3)
    if info.consumer:
        out["worker"] = info.consumer
        out["deliveries"] = info.deliveries
    if rec is not None:
        for name in ("task", "attempt", "reason", "error", "worker"):
            value = getattr(rec, name)
            if value is not None:
                out[name] = value
        if info.state is JobState.DONE:
            out["result"] = rec.result
    click.echo(json.dumps(out, indent=2, default=str))
    if info.state is JobState.UNKNOWN:
        click.echo(
            f"job {job_id} is unknown in namespace {app.namespace!r} at {redact_url(app.url)}; "
            "if it lives in another namespace, pass --namespace NAME or --app MODULE:APP, "
            "or set CONVEYOR_NAMESPACE",
            err=True,
        )
        sys.exit(2)
