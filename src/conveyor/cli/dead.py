"""`conveyor dead ...`: inspect, replay and purge the dead-letter stream of a queue."""

from __future__ import annotations

import click

from .. import dead_letters
from ..errors import ReplayRefused
from .base import ENTRY_ID, Context, app_option, errors, main, one_line, pass_context, queue_option
from .output import console, table

task_option = click.option("--task", default=None, help="Only dead jobs of this task.")
reason_option = click.option(
    "--reason", default=None, help="Only dead jobs with this reason (failed, malformed, ...)."
)


@main.group()
def dead() -> None:
    """Inspect, replay and purge jobs in the dead-letter stream."""


@dead.command(name="ls")
@app_option
@queue_option
@click.option("-n", "--limit", default=20, show_default=True)
@task_option
@reason_option
@pass_context
@errors
def dead_ls(
    c: Context, spec: str | None, queue: str, limit: int, task: str | None, reason: str | None
) -> None:
    """List the newest dead jobs of a queue, optionally of one task or reason."""
    app = c.app(spec)
    rows = []
    for job in dead_letters.list_dead(app, queue, limit, task=task, reason=reason):
        error = app.redacted(job.fields).get("dead_error", "")
        rows.append([job.entry_id, job.job_id, job.task, job.reason, error[:200]])
    columns = ("entry", "job id", "task", "reason", "error")
    console.print(table(f"dead jobs in {queue}", columns, rows, ids=("entry", "job id")))


@dead.command(name="show")
@click.argument("entry_id", type=ENTRY_ID)
@app_option
@queue_option
@pass_context
@errors
def dead_show(c: Context, entry_id: str, spec: str | None, queue: str) -> None:
    """Show every field of one dead job, traceback included."""
    app = c.app(spec)
    job = dead_letters.get_dead(app, queue, entry_id)
    if job is None:
        raise click.ClickException(
            f"no dead job {entry_id} in queue {queue!r} of namespace {app.namespace!r}; "
            "`conveyor dead ls` lists them"
        )
    for name, value in app.redacted(job.fields).items():
        click.echo(f"{name}: {value}")


@dead.command(name="replay")
@click.argument("entry_ids", nargs=-1, type=ENTRY_ID)
@click.option("--all", "replay_all", is_flag=True, help="Replay every dead job of the queue.")
@task_option
@reason_option
@app_option
@queue_option
@pass_context
@errors
def dead_replay(
    c: Context,
    entry_ids: tuple[str, ...],
    replay_all: bool,
    task: str | None,
    reason: str | None,
    spec: str | None,
    queue: str,
) -> None:
    """Put dead jobs back on their ready stream for another try.

    Name entry ids, or select with --all, --task and --reason (every dead job matching
    them); ids named with --task or --reason are replayed only if they match.
    """
    filtered = task is not None or reason is not None
    if not entry_ids and not replay_all and not filtered:
        raise click.UsageError("name entry ids to replay, or pass --all, --task or --reason")
    if entry_ids and replay_all:
        raise click.UsageError("name entry ids or pass --all, not both")
    app = c.app(spec)
    selected: list[str]
    if entry_ids:
        selected = list(entry_ids)
    else:
        found = dead_letters.find(app, queue, task, reason)
        selected = [j.entry_id for j in found][::-1]  # oldest first, as they died
        if not selected:
            wanted = " and ".join(
                f"{name} {value!r}" for name, value in (("task", task), ("reason", reason)) if value
            )
            raise click.ClickException(
                f"no dead job in queue {queue!r}"
                + (f" with {wanted}" if wanted else "")
                + "; nothing replayed"
            )
    done = 0
    for entry_id in selected:
        if entry_ids and filtered:
            job = dead_letters.get_dead(app, queue, entry_id)
            if job is not None and not job.matches(task, reason):
                click.echo(f"skipped {entry_id}: does not match --task/--reason", err=True)
                continue
        try:
            job_id = dead_letters.replay(app, queue, entry_id)
        except ReplayRefused as exc:
            click.echo(f"skipped {entry_id}: {one_line(str(exc))}", err=True)
            continue
        if job_id:
            done += 1
            click.echo(f"replayed {entry_id} as job {job_id}")
        else:
            click.echo(f"skipped {entry_id}: not in the dead-letter stream", err=True)
    click.echo(f"{done} job(s) replayed")


@dead.command(name="purge")
@app_option
@queue_option
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_context
@errors
def dead_purge(c: Context, spec: str | None, queue: str, yes: bool) -> None:
    """Delete every dead job of a queue."""
    if not yes:
        click.confirm(f"Delete all dead jobs of queue {queue}?", abort=True)
    click.echo(f"{dead_letters.purge(c.app(spec), queue)} dead job(s) deleted")
