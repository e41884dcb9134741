"""`conveyor dashboard`: serve the web dashboard of an app (needs the ``dashboard`` extra)."""

from __future__ import annotations

import click

from ..errors import ConfigurationError
from .base import Context, errors, main, pass_context


@main.command()
@click.option("--app", "spec", required=True, help="module:app whose queues to show.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8900, show_default=True, type=click.IntRange(1, 65535))
@click.option("--read-only", is_flag=True, help="Show everything, change nothing (no actions).")
@click.option(
    "--metrics/--no-metrics",
    "serve_metrics",
    default=True,
    show_default=True,
    help="Serve /metrics for Prometheus (behind the same auth) when prometheus-client is there.",
)
@click.option(
    "--token",
    envvar="CONVEYOR_DASHBOARD_TOKEN",
    default=None,
    help="Require this bearer token (or a login with it). Env: CONVEYOR_DASHBOARD_TOKEN.",
)
@click.option(
    "--basic-auth",
    "basic",
    envvar="CONVEYOR_DASHBOARD_BASIC_AUTH",
    default=None,
    metavar="USER:PASSWORD",
    help="Require HTTP basic auth. Env: CONVEYOR_DASHBOARD_BASIC_AUTH.",
)
@pass_context
@errors
def dashboard(
    c: Context,
    spec: str,
    host: str,
    port: int,
    read_only: bool,
    serve_metrics: bool,
    token: str | None,
    basic: str | None,
) -> None:
    """Serve the dashboard of the app at --app on HOST:PORT (loopback unless told otherwise;
    any other address needs --token or --basic-auth)."""
    try:
        import uvicorn

        from .. import dashboard as web
    except ImportError as exc:
        raise ConfigurationError(
            f"the dashboard needs the 'dashboard' extra ({exc.name} is missing): "
            "pip install 'conveyor-queue[dashboard]'"
        ) from None
    if token and basic:
        raise click.UsageError("pass --token or --basic-auth, not both")
    auth = web.TokenAuth(token) if token else web.BasicAuth.parse(basic) if basic else None
    web.check_bind(host, auth)
    app = c.app(spec)
    asgi = web.asgi(app, auth=auth, read_only=read_only, metrics=None if serve_metrics else False)
    shown = f"[{host}]" if ":" in host else host
    click.echo(
        f"Conveyor dashboard of {spec} on http://{shown}:{port}/"
        + (" (read-only)" if read_only else "")
        + (f" ({'token' if token else 'basic'} auth)" if auth else "")
    )
    uvicorn.run(asgi, host=host, port=port, log_level=c.log_level.lower(), access_log=False)
