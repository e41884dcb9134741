"""`conveyor stats`: per queue counts, once or every N seconds, as a table or JSON lines."""

from __future__ import annotations

import contextlib
import json
import time

import click
from rich.table import Table

from .. import stats
from ..app import Conveyor
from ..errors import redact_url
from .base import Context, app_option, errors, main, pass_context
from .output import console, table

COLUMNS = ("queue", "ready", "running", "delayed", "dead", "consumers", "workers", "length")


def _table(app: Conveyor, queues: list[str]) -> Table:
    data = stats.snapshot(app, queues)
    rows = [[str(row[col]) for col in COLUMNS] for row in data["queues"]]
    title = (
        f"Conveyor queues ({app.namespace} @ {redact_url(app.url)}), "
        f"{len(data['workers'])} live worker(s)"
    )
    return table(title, COLUMNS, rows, ids=("queue",), right=COLUMNS[1:])


@main.command(name="stats")
@app_option
@click.option("-q", "--queue", "queues", multiple=True, help="Queues (default: all found).")
@click.option("--watch", type=float, default=None, help="Refresh every N seconds.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@pass_context
@errors
def stats_cmd(
    c: Context, spec: str | None, queues: tuple[str, ...], watch: float | None, as_json: bool
) -> None:
    """Per queue: ready (lag), running (pending), delayed, dead, consumers, live workers and
    stream length. With --json --watch, one JSON document per line every N seconds."""
    if watch is not None and watch <= 0:
        raise click.BadParameter("must be > 0 seconds", param_hint="--watch")
    app = c.app(spec)

    def names() -> list[str]:
        return list(queues) or stats.discover_queues(app)

    if as_json and watch is None:
        click.echo(json.dumps(stats.snapshot(app, names()), indent=2))
        return
    if watch is None:
        console.print(_table(app, names()))
        return
    with contextlib.suppress(KeyboardInterrupt):
        if as_json:
            while True:
                click.echo(json.dumps(stats.snapshot(app, names())))
                time.sleep(watch)
        from rich.live import Live

        with Live(_table(app, names()), console=console, refresh_per_second=4) as live:
            while True:
                time.sleep(watch)
                live.update(_table(app, names()))
