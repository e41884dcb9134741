"""The `conveyor` command: run workers, enqueue, inspect jobs, queues and dead letters."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

import click
import redis
from rich.console import Console
from rich.table import Table

from . import dead_letters, stats
from .app import Conveyor
from .broker import configured_url
from .errors import ConnectionFailed, ConveyorError
from .job import JobState
from .settings import Leases, WorkerSettings

F = TypeVar("F", bound=Callable[..., Any])
console = Console()


class Context:
    def __init__(self, url: str | None, namespace: str | None, log_level: str) -> None:
        self.url = url
        self.namespace = namespace
        self.log_level = log_level

    def app(self, spec: str | None = None) -> Conveyor:
        if spec:
            from .worker.loader import load_app

            app = load_app(spec)
            app.rebind(url=self.url, namespace=self.namespace)
            return app
        return Conveyor(self.url, namespace=self.namespace or "conveyor")


def _json(kind: str, text: str | None, default: Any) -> Any:
    if text is None:
        return default
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", param_hint=f"--{kind}") from None
    expected = list if kind == "args" else dict
    if not isinstance(value, expected):
        raise click.BadParameter(
            f"must be a JSON {'array' if kind == 'args' else 'object'}", param_hint=f"--{kind}"
        )
    return value


def _errors(fn: F) -> F:
    """Turn Conveyor's errors into a one-line message and exit code 1, not a traceback."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ConveyorError as exc:
            raise click.ClickException(str(exc)) from None
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            c = click.get_current_context().find_object(Context)
            url = configured_url(c.url if c else None)
            raise click.ClickException(str(ConnectionFailed(url, exc))) from None

    return wrapper  # type: ignore[return-value]


@click.group()
@click.option(
    "--url", envvar="CONVEYOR_REDIS_URL", help="Redis URL (default: REDIS_URL, then localhost)."
)
@click.option("--namespace", default=None, help="Key prefix (default: the app's, else 'conveyor').")
@click.option("--log-level", default="INFO", show_default=True)
@click.version_option(package_name="conveyor-queue")
@click.pass_context
def main(ctx: click.Context, url: str | None, namespace: str | None, log_level: str) -> None:
    """Conveyor: a reliable task queue on Redis Streams."""
    ctx.obj = Context(url, namespace, log_level)


pass_context = click.make_pass_decorator(Context)


@main.command()
@click.argument("spec")
@click.option(
    "-c", "--concurrency", default=10, show_default=True, help="Jobs at once per process."
)
@click.option("-p", "--processes", default=1, show_default=True, help="Worker processes.")
@click.option("-q", "--queues", default=None, help="Comma-separated queues (default: the app's).")
@click.option("--lease", default=30.0, show_default=True, help="Lease timeout in seconds.")
@click.option("--grace", default=30.0, show_default=True, help="Shutdown grace in seconds.")
@pass_context
@_errors
def worker(
    c: Context,
    spec: str,
    concurrency: int,
    processes: int,
    queues: str | None,
    lease: float,
    grace: float,
) -> None:
    """Run workers for the app at SPEC (module:attribute), e.g. `conveyor worker tasks:app`."""
    from .logs import configure_logging
    from .worker.supervisor import Supervisor

    configure_logging(c.log_level)
    app = c.app(spec)  # fail here, once, on a bad path, rather than in every child
    app.broker.server_info()
    names = tuple(q.strip() for q in queues.split(",") if q.strip()) if queues else None
    if names is None:
        from .worker.runtime import app_queues

        names = app_queues(app)
    settings = WorkerSettings(
        queues=names, concurrency=concurrency, leases=Leases(timeout=lease), shutdown_grace=grace
    )
    if processes < 1:
        raise click.BadParameter("must be >= 1", param_hint="--processes")
    supervisor = Supervisor(
        spec, settings, processes, url=c.url, namespace=c.namespace, log_level=c.log_level
    )
    sys.exit(supervisor.run())


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
@_errors
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
    args = _json("args", args_json, [])
    kwargs = _json("kwargs", kwargs_json, {})
    app = c.app(spec)
    task = app.get_task(task_name).using(queue=queue, priority=priority)
    job = task.enqueue_in(delay, *args, **kwargs) if delay else task.enqueue(*args, **kwargs)
    click.echo(job.id)
    if wait is not None:
        click.echo(json.dumps(job.result(timeout=wait)))


@main.command()
@click.argument("job_id")
@click.option("--app", "spec", default=None, help="module:app, to use its URL and namespace.")
@pass_context
@_errors
def status(c: Context, job_id: str, spec: str | None) -> None:
    """Show where a job is and, once it ended, its result or error."""
    info = c.app(spec).job(job_id).info()
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
        sys.exit(2)


def _stats_table(app: Conveyor, queues: list[str]) -> Table:
    table = Table(title=f"Conveyor queues ({app.namespace} @ {app.broker.url})")
    for col in ("queue", "ready", "running", "delayed", "dead", "consumers", "stream length"):
        table.add_column(col, justify="left" if col == "queue" else "right")
    for q in queues:
        s = stats.queue_stats(app, q)
        length = sum(lv.length for lv in s.levels)
        table.add_row(
            q,
            str(s.ready),
            str(s.running),
            str(s.delayed),
            str(s.dead),
            str(s.consumers),
            str(length),
        )
    return table


@main.command(name="stats")
@click.option("--app", "spec", default=None, help="module:app, to use its URL and namespace.")
@click.option("-q", "--queue", "queues", multiple=True, help="Queues (default: all found).")
@click.option("--watch", type=float, default=None, help="Refresh every N seconds.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@pass_context
@_errors
def stats_cmd(
    c: Context, spec: str | None, queues: tuple[str, ...], watch: float | None, as_json: bool
) -> None:
    """Per queue: ready (lag), running (pending), delayed, dead, consumers."""
    app = c.app(spec)
    names = list(queues) or stats.discover_queues(app)
    if as_json:
        data = []
        for q in names:
            s = stats.queue_stats(app, q)
            data.append(
                {
                    "queue": q,
                    "ready": s.ready,
                    "running": s.running,
                    "delayed": s.delayed,
                    "dead": s.dead,
                    "consumers": s.consumers,
                }
            )
        click.echo(json.dumps(data, indent=2))
        return
    if watch is None:
        console.print(_stats_table(app, names))
        return
    from rich.live import Live

    with Live(_stats_table(app, names), console=console, refresh_per_second=4) as live:
        while True:
            time.sleep(watch)
            names = list(queues) or stats.discover_queues(app)
            live.update(_stats_table(app, names))


@main.group()
def dead() -> None:
    """Inspect, replay and purge jobs in the dead-letter stream."""


queue_option = click.option("-q", "--queue", default="default", show_default=True)
app_option = click.option("--app", "spec", default=None, help="module:app (URL, namespace).")


@dead.command(name="ls")
@app_option
@queue_option
@click.option("-n", "--limit", default=20, show_default=True)
@pass_context
@_errors
def dead_ls(c: Context, spec: str | None, queue: str, limit: int) -> None:
    """List the newest dead jobs of a queue."""
    table = Table(title=f"dead jobs in {queue}")
    for col in ("entry", "job id", "task", "reason", "error"):
        table.add_column(col)
    app = c.app(spec)
    for job in dead_letters.list_dead(app, queue, limit):
        shown = app.redacted(job.fields)
        table.add_row(
            job.entry_id, job.job_id, job.task, job.reason, shown.get("dead_error", "")[:80]
        )
    console.print(table)


@dead.command(name="show")
@click.argument("entry_id")
@app_option
@queue_option
@pass_context
@_errors
def dead_show(c: Context, entry_id: str, spec: str | None, queue: str) -> None:
    """Show every field of one dead job, traceback included."""
    app = c.app(spec)
    job = dead_letters.get_dead(app, queue, entry_id)
    if job is None:
        raise click.ClickException(f"no dead job {entry_id} in queue {queue}")
    for name, value in app.redacted(job.fields).items():
        click.echo(f"{name}: {value}")


@dead.command(name="replay")
@click.argument("entry_ids", nargs=-1)
@click.option("--all", "replay_all", is_flag=True, help="Replay every dead job of the queue.")
@app_option
@queue_option
@pass_context
@_errors
def dead_replay(
    c: Context, entry_ids: tuple[str, ...], replay_all: bool, spec: str | None, queue: str
) -> None:
    """Put dead jobs back on their ready stream for another try."""
    app = c.app(spec)
    if replay_all:
        entry_ids = tuple(j.entry_id for j in dead_letters.iter_dead(app, queue))
    if not entry_ids:
        raise click.UsageError("name entry ids to replay, or pass --all")
    done = 0
    for entry_id in entry_ids:
        job_id = dead_letters.replay(app, queue, entry_id)
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
@_errors
def dead_purge(c: Context, spec: str | None, queue: str, yes: bool) -> None:
    """Delete every dead job of a queue."""
    if not yes:
        click.confirm(f"Delete all dead jobs of queue {queue}?", abort=True)
    click.echo(f"{dead_letters.purge(c.app(spec), queue)} dead job(s) deleted")


@main.group(invoke_without_command=True)
@app_option
@queue_option
@click.option("-n", "--limit", default=20, show_default=True)
@click.option("--task", default=None, help="Only jobs of this task.")
@click.pass_context
@_errors
def history(
    click_ctx: click.Context, spec: str | None, queue: str, limit: int, task: str | None
) -> None:
    """The newest jobs of a queue (kept by retention), with their current state."""
    if click_ctx.invoked_subcommand is not None:
        return
    from . import history as hist

    c = click_ctx.find_object(Context)
    assert c is not None
    table = Table(title=f"history of {queue}")
    for col in ("entry", "level", "job id", "task", "args", "state"):
        table.add_column(col)
    app = c.app(spec)
    for e in hist.recent(app, queue, limit, task):
        table.add_row(
            e.entry_id,
            e.level,
            e.job_id,
            e.task,
            app.redacted(e.fields).get("args", "")[:40],
            e.info.state.value,
        )
    console.print(table)


@history.command(name="replay")
@click.argument("entry_id")
@click.option("--level", type=click.Choice(["high", "normal", "low"]), default="normal")
@app_option
@queue_option
@pass_context
@_errors
def history_replay(c: Context, entry_id: str, level: str, spec: str | None, queue: str) -> None:
    """Run a past job again (same task and arguments) as a new job."""
    from . import history as hist

    job_id = hist.replay(c.app(spec), queue, level, entry_id)
    if job_id is None:
        raise click.ClickException(f"no entry {entry_id} in {queue}/{level} (trimmed?)")
    click.echo(job_id)


@main.command()
@click.option(
    "--jobs", default=12, show_default=True, help="Documents to push through the pipeline."
)
@pass_context
@_errors
def demo(c: Context, jobs: int) -> None:
    """Run a real worker on a document pipeline, on a Redis it finds or starts."""
    from .demo import run_demo

    sys.exit(run_demo(c.url, documents=jobs))
