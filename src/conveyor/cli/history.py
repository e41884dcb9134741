"""`conveyor history`: the newest jobs of a queue with their state, and replays of them."""

from __future__ import annotations

import click

from .. import history as hist
from .base import ENTRY_ID, Context, app_option, errors, main, queue_option
from .output import console, table


@main.group(invoke_without_command=True)
@app_option
@queue_option
@click.option("-n", "--limit", default=20, show_default=True)
@click.option("--task", default=None, help="Only jobs of this task.")
@click.pass_context
@errors
def history(
    click_ctx: click.Context, spec: str | None, queue: str, limit: int, task: str | None
) -> None:
    """The newest jobs of a queue (kept by retention), with their current state."""
    if click_ctx.invoked_subcommand is not None:
        return
    c = click_ctx.find_object(Context)
    assert c is not None
    app = c.app(spec)
    rows = [
        [
            e.entry_id,
            e.level,
            e.job_id,
            e.task,
            app.redacted(e.fields).get("args", "")[:200],
            e.info.state.value,
        ]
        for e in hist.recent(app, queue, limit, task)
    ]
    columns = ("entry", "level", "job id", "task", "args", "state")
    console.print(table(f"history of {queue}", columns, rows, ids=("entry", "job id")))


@history.command(name="replay")
@click.argument("entry_id", type=ENTRY_ID)
@click.option("--level", type=click.Choice(["high", "normal", "low"]), default="normal")
@click.option("--force", is_flag=True, help="Replay even if the job has not ended yet.")
@app_option
@queue_option
@click.pass_obj
@errors
def history_replay(
    c: Context, entry_id: str, level: str, force: bool, spec: str | None, queue: str
) -> None:
    """Run a past job again (same task and arguments) as a new job, once it has ended."""
    job_id = hist.replay(c.app(spec), queue, level, entry_id, force=force)
    if job_id is None:
        raise click.ClickException(f"no entry {entry_id} in {queue}/{level} (trimmed?)")
    click.echo(job_id)
