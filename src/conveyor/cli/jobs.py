"""`conveyor enqueue`, `status` and `cancel`: add one job, follow one by its id, stop one."""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime, timezone
from typing import Any

import click

from ..cancellation import RECORD_EXPIRED, CancelOutcome, CancelResult
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
    if info.expired_by_option:
        out["expired_by"] = "expires option"
    shown = app.job(job_id).progress() if info.state is not JobState.UNKNOWN else None
    if shown is not None:
        out["progress"] = {
            "fraction": shown.fraction,
            "message": shown.message,
            "at": _utc(shown.at),
        }
    click.echo(json.dumps(out, indent=2, default=str))
    if info.state is JobState.UNKNOWN:
        click.echo(
            f"job {job_id} is unknown in namespace {app.namespace!r} at {redact_url(app.url)}; "
            "if it lives in another namespace, pass --namespace NAME or --app MODULE:APP, "
            "or set CONVEYOR_NAMESPACE",
            err=True,
        )
        sys.exit(2)


def _utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat(timespec="seconds")


@main.command()
@click.argument("job_id")
@click.option("--reason", default=None, help="Recorded with the job (shown by status).")
@app_option
@pass_context
@errors
def cancel(c: Context, job_id: str, reason: str | None, spec: str | None) -> None:
    """Cancel a job wherever it is; one line says what happened.

    Exit 0 when the job is (or will be) stopped or had already ended, 1 for an unknown id.
    """
    app = c.app(spec)
    click.echo(describe(job_id, app.job(job_id).cancel(reason)))


def describe(job_id: str, result: CancelResult) -> str:
    """One line per outcome: what changed and what happens next."""
    match result.outcome:
        case CancelOutcome.CANCELLED:
            return f"cancelled {job_id}: it was waiting to run and never will"
        case CancelOutcome.WILL_SKIP:
            return f"cancelled {job_id}: it was queued; it will be skipped when a worker reads it"
        case CancelOutcome.SIGNALLED:
            return (
                f"signalled {job_id} to worker {result.detail or '(unknown)'}: it is running "
                "and stops within one lease renewal, ending cancelled"
            )
        case CancelOutcome.ALREADY_ENDED if result.detail == RECORD_EXPIRED:
            return (
                f"nothing to cancel: {job_id} already ended, so long ago that its record "
                "expired (its task's result_ttl); there is no state left to show"
            )
        case CancelOutcome.ALREADY_ENDED:
            return f"nothing to cancel: {job_id} already ended as {result.detail or 'finished'}"
    return f"{job_id}: {result.outcome.value}"  # pragma: no cover - every outcome is above
