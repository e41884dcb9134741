"""`conveyor cron ls`: the app's schedules, with their last and next ticks on Redis' clock.

"Last fired" is the schedule's mark in Redis (what a worker last enqueued); "last due" is the
latest tick by the expression. When the last due tick is later than the last fired one, the
row says how many were missed (a worker was down, or the schedule's queue has no worker).
"""

from __future__ import annotations

import json
from typing import Any

import click

from ..cron_view import schedule_rows
from .base import Context, errors, main, pass_context
from .output import console, table


@main.group()
def cron() -> None:
    """Cron schedules: what is scheduled and when it last and next fires."""


@cron.command("ls")
@click.argument("spec")
@click.option("--next", "next_n", default=1, show_default=True, help="Next ticks to show.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per schedule.")
@pass_context
@errors
def ls(c: Context, spec: str, next_n: int, as_json: bool) -> None:
    """List the schedules of the app at SPEC (module:attribute)."""
    if next_n < 1:
        raise click.BadParameter("must be >= 1", param_hint="--next")
    app = c.app(spec)
    rows = schedule_rows(app, next_n)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"no cron schedules in {spec}")
        return
    columns = [
        "TASK",
        "QUEUE",
        "SCHEDULE",
        "TZ",
        "MISFIRE",
        "LAST DUE (UTC)",
        "LAST FIRED (UTC)",
        "NEXT (UTC)",
        "NEXT (LOCAL)",
    ]
    body = [
        [
            row["task"],
            row["queue"],
            row["schedule"],
            row["tz"],
            row["misfire"],
            row["last_due"],
            _fired_cell(row),
            "\n".join(row["next"]),
            "\n".join(row["next_local"]),
        ]
        for row in rows
    ]
    console.print(table("cron schedules", columns, body, ids=["TASK", "QUEUE"]))


def _fired_cell(row: dict[str, Any]) -> str:
    fired = row["last_fired"] or "never"
    if row["missed"]:
        return f"{fired} (missed {row['missed']}{'+' if row['missed_more'] else ''})"
    return str(fired)
