"""What every command shares: the `conveyor` group, the Redis and namespace it resolves, and
errors turned into one line (exit 1, or 2 for a usage error) instead of a traceback.

Precedence, the same for every command and for the worker processes a supervisor starts:
the URL is the ``--url`` flag, else the URL written in the app's code, else
CONVEYOR_REDIS_URL, else REDIS_URL, else localhost. The app's code beats the environment
because its author named that Redis on purpose; the flag beats both because the operator
typed it now. The namespace is ``--namespace``, else the app's, else CONVEYOR_NAMESPACE
(for commands without ``--app``), else ``conveyor``.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from typing import Any, TypeVar

import click
import redis

from ..app import Conveyor
from ..broker import configured_url
from ..errors import ConnectionFailed, ConveyorError, redact_url
from ..keys import ENTRY_PATTERN

F = TypeVar("F", bound=Callable[..., Any])

NAMESPACE_ENV = "CONVEYOR_NAMESPACE"
DEFAULT_NAMESPACE = "conveyor"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
#: Stream ids are two unsigned 64-bit integers.
MAX_ID_PART = 2**64 - 1


class Context:
    """The global options as typed: only what the operator gave on the command line."""

    def __init__(self, url: str | None, namespace: str | None, log_level: str) -> None:
        self.url = url
        self.namespace = namespace
        self.log_level = log_level
        self._app: Conveyor | None = None

    def app(self, spec: str | None = None) -> Conveyor:
        """The app at SPEC with the flags applied, or a bare app for commands without one.

        Without ``--url`` the app keeps the URL its code resolved (its explicit URL, else
        the environment's), which is what its producers use too.
        """
        if spec:
            from ..worker.loader import load_app

            app = load_app(spec)
            app.rebind(url=self.url, namespace=self.namespace)
        else:
            namespace = self.namespace or os.environ.get(NAMESPACE_ENV) or DEFAULT_NAMESPACE
            app = Conveyor(self.url, namespace=namespace)
        self._app = app
        return app

    @property
    def target_url(self) -> str:
        """The URL the command talks to, for error messages."""
        return self._app.url if self._app is not None else configured_url(self.url)


def one_line(message: str) -> str:
    return " ".join(message.split())


def errors(fn: F) -> F:
    """Turn Conveyor's and Redis' errors into a one-line message and exit code 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ConveyorError as exc:
            raise click.ClickException(one_line(str(exc))) from None
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise click.ClickException(one_line(str(ConnectionFailed(_url(), exc)))) from None
        except redis.ResponseError as exc:
            raise click.ClickException(
                one_line(f"Redis at {redact_url(_url())} refused the command: {exc}")
            ) from None
        except redis.RedisError as exc:  # InvalidResponse: something other than Redis answered
            raise click.ClickException(
                one_line(
                    f"unexpected reply from {redact_url(_url())} ({type(exc).__name__}: {exc}); "
                    "is that address a Redis server? Check --url or CONVEYOR_REDIS_URL."
                )
            ) from None

    return wrapper  # type: ignore[return-value]


def _url() -> str:
    ctx = click.get_current_context(silent=True)
    c = ctx.find_object(Context) if ctx else None
    return c.target_url if c else configured_url()


def parse_json(kind: str, text: str | None, default: Any) -> Any:
    """A ``--args`` (JSON array) or ``--kwargs`` (JSON object) option, or a usage error."""
    if text is None:
        return default
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", param_hint=f"--{kind}") from None
    except RecursionError:
        raise click.BadParameter(
            "JSON nested too deeply; pass flatter arguments", param_hint=f"--{kind}"
        ) from None
    expected = list if kind == "args" else dict
    if not isinstance(value, expected):
        raise click.BadParameter(
            f"must be a JSON {'array' if kind == 'args' else 'object'}", param_hint=f"--{kind}"
        )
    return value


class EntryId(click.ParamType[str]):
    """A stream entry id, ``<milliseconds>-<sequence>``, checked before Redis sees it."""

    name = "ENTRY_ID"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value)
        if ENTRY_PATTERN.fullmatch(text) and all(
            int(part) <= MAX_ID_PART for part in text.split("-")
        ):
            return text
        self.fail(
            f"not a stream entry id: {text!r} (expected <milliseconds>-<sequence> as "
            "`conveyor dead ls` or `conveyor history` shows it)",
            param,
            ctx,
        )


ENTRY_ID = EntryId()


@click.group()
@click.option(
    "--url",
    default=None,
    help="Redis URL. Default: the app's URL from its code, else CONVEYOR_REDIS_URL, "
    "else REDIS_URL, else redis://127.0.0.1:6379/0.",
)
@click.option(
    "--namespace",
    default=None,
    help="Key prefix. Default: the app's, else CONVEYOR_NAMESPACE, else 'conveyor'.",
)
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    default="INFO",
    show_default=True,
)
@click.version_option(package_name="conveyor-queue")
@click.pass_context
def main(ctx: click.Context, url: str | None, namespace: str | None, log_level: str) -> None:
    """Conveyor: a reliable task queue on Redis Streams."""
    ctx.obj = Context(url, namespace, log_level.upper())


pass_context = click.make_pass_decorator(Context)
queue_option = click.option("-q", "--queue", default="default", show_default=True)
app_option = click.option("--app", "spec", default=None, help="module:app (URL, namespace).")
