"""`conveyor events`: the latest job events of a namespace, and with --follow the new ones."""

from __future__ import annotations

import contextlib
import datetime
import json

import click

from .. import events
from ..events import Event
from .base import Context, app_option, errors, main, pass_context


def _line(e: Event) -> str:
    at = datetime.datetime.fromtimestamp(e.at_ms / 1000, datetime.timezone.utc)
    parts = [at.strftime("%H:%M:%S.%f")[:-3], f"{e.kind:<9}", e.job_id, e.task]
    if e.attempt > 1:
        parts.append(f"attempt={e.attempt}")
    if e.duration_ms is not None:
        parts.append(f"took={e.duration_ms:.1f}ms")
    if e.queue_wait_ms is not None:
        parts.append(f"waited={e.queue_wait_ms:.1f}ms")
    if e.reason:
        parts.append(f"reason={e.reason}")
    if e.error:
        parts.append(f"error={' '.join(e.error.split())[:120]}")
    return " ".join(parts)


@main.command(name="events")
@app_option
@click.option("-n", "--last", default=20, show_default=True, help="Events shown first.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new events until Ctrl-C.")
@click.option("-q", "--queue", "queues", multiple=True, help="Only these queues.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@pass_context
@errors
def events_cmd(
    c: Context, spec: str | None, last: int, follow: bool, queues: tuple[str, ...], as_json: bool
) -> None:
    """Job events (started, succeeded, failed, retried, dead, cancelled, expired) from the
    events stream, which workers write when the app has ``events=True``."""
    if last < 0:
        raise click.BadParameter("must be >= 0", param_hint="--last")
    app = c.app(spec)
    if not app.hooks.events and spec:
        click.echo(
            "note: this app does not write events (Conveyor(..., events=True) turns them on)",
            err=True,
        )

    def show(e: Event) -> None:
        if queues and e.queue not in queues:
            return
        click.echo(json.dumps(e.as_dict()) if as_json else _line(e), nl=True)

    shown = events.latest(app, last) if last else []
    for e in shown:
        show(e)
    if not follow:
        return
    after = shown[-1].id if shown else "$"
    with contextlib.suppress(KeyboardInterrupt):
        for e in events.follow(app, after=after):
            show(e)
