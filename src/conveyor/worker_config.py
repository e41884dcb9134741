"""Where a worker's settings come from: one table, one order, for every WorkerSettings field.

Each field has a flag of `conveyor worker` and an environment variable named after the flag
(``--lease`` -> ``CONVEYOR_LEASE``). A field takes the first of these that says something:

1. the flag (the operator typed it for this run);
2. the ``CONVEYOR_*`` variable (the deployment: a container's env, a unit file);
3. the app's defaults, ``Conveyor(..., worker=WorkerSettings(...))`` (the code);
4. the built-in default of WorkerSettings.

The environment beats the code for these because only the worker reads them and they tune one
deployment: the code ships sensible defaults, and a deployment adapts its concurrency, lease
or retention without a new build. The Redis URL and namespace go the other way (flag, code,
environment: see cli/base.py), because they are the app's binding, which its producers
resolve without any flag: an environment that could move the worker and not the producers
would leave jobs in a Redis no worker reads.

``resolve`` is pure (flags and environment are passed in), so any runner (the CLI, a
framework's command) resolves a worker's settings the same way.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import click

from .errors import ConfigurationError
from .settings import WorkerSettings

ENV_PREFIX = "CONVEYOR_"
FLAG = "flag"
ENV = "env"
APP = "app"
DEFAULT = "default"
#: what ``--prefetch`` and CONVEYOR_PREFETCH take for WorkerSettings.prefetch=None
AUTO = "auto"


class QueueList(click.ParamType[tuple[str, ...]]):
    """Comma-separated queue names, e.g. ``emails,reports``."""

    name = "QUEUES"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[str, ...]:
        if isinstance(value, tuple):
            return value
        names = tuple(q.strip() for q in str(value).split(",") if q.strip())
        if not names:
            self.fail("name at least one queue, e.g. default,emails", param, ctx)
        return names


class Prefetch(click.ParamType[int | str]):
    """A whole number >= 0, or ``auto`` (adapt to the jobs' run time)."""

    name = "N|auto"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> int | str:
        if isinstance(value, int):
            return value
        if str(value).strip().lower() == AUTO:
            return AUTO  # not None: that would read as "not given"
        try:
            return int(value)
        except ValueError:
            self.fail(f"{value!r} is neither a whole number nor 'auto'", param, ctx)


@dataclass(frozen=True)
class Setting:
    """One WorkerSettings field (``path``, dotted into Leases or Retention) and its flag."""

    path: str
    flag: str
    type: click.ParamType[Any]
    help: str
    short: str | None = None

    @property
    def param(self) -> str:
        """The flag's Python name, as click passes it."""
        return self.flag.removeprefix("--").replace("-", "_")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.param.upper()


SETTINGS: tuple[Setting, ...] = (
    Setting("queues", "--queues", QueueList(), "Comma-separated queues.", "-q"),
    Setting("concurrency", "--concurrency", click.INT, "Jobs at once per process.", "-c"),
    Setting("prefetch", "--prefetch", Prefetch(), "Jobs fetched ahead of a free slot, or auto."),
    Setting("leases.timeout", "--lease", click.FLOAT, "Lease timeout in seconds."),
    Setting("leases.reclaim_every", "--reclaim-every", click.FLOAT, "Reclaim scan interval (s)."),
    Setting("retention.keep_count", "--keep-count", click.INT, "Finished entries kept per stream."),
    Setting("retention.keep_seconds", "--keep-seconds", click.FLOAT, "Keep finished entries (s)."),
    Setting("retention.trim_every", "--trim-every", click.FLOAT, "Trim interval in seconds."),
    Setting("retention.max_trim", "--max-trim", click.INT, "Most entries one trim pass cuts."),
    Setting("shutdown_grace", "--grace", click.FLOAT, "Shutdown grace in seconds."),
    Setting("block_ms", "--block-ms", click.INT, "Blocking read timeout in ms (1..10000)."),
    Setting("promote_every", "--promote-every", click.FLOAT, "Delayed-job promotion interval (s)."),
    Setting("max_payload_bytes", "--max-payload-bytes", click.INT, "Largest job payload read."),
    Setting("pool_size", "--pool-size", click.INT, "Subprocesses for executor='process' tasks."),
    Setting("burst", "--burst", click.BOOL, "Exit 0 once the queues and delayed sets are empty."),
    Setting("max_jobs", "--max-jobs", click.INT, "Restart a process after N jobs."),
    Setting("max_memory_mb", "--max-memory", click.FLOAT, "Restart a process past this RSS (MB)."),
)
BY_PARAM = {s.param: s for s in SETTINGS}


class SettingError(ConfigurationError):
    """A value for a worker setting that cannot be used; ``source`` names where it came from
    (``--lease``, ``CONVEYOR_LEASE`` or the app)."""

    def __init__(self, source: str, value: Any, reason: str) -> None:
        super().__init__(f"{source}={value!r}: {reason}")
        self.source = source
        self.reason = reason


@dataclass(frozen=True)
class Resolved:
    """The settings a worker runs with, and for each field where its value came from."""

    settings: WorkerSettings
    #: field path -> ``--flag``, ``CONVEYOR_NAME``, ``app`` or ``default``
    sources: dict[str, str]

    def describe(self) -> str:
        """The fields not at their built-in default, with their source, for the start log."""
        parts = [
            f"{path}={_get(self.settings, path)!r} ({source})"
            for path, source in self.sources.items()
            if source != DEFAULT
        ]
        return ", ".join(parts) or "all built-in defaults"


def resolve(
    app_defaults: WorkerSettings,
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Resolved:
    """The worker settings for these flags (by param name; None = not given), this
    environment and the app's defaults, in that order of precedence."""
    flags = flags or {}
    environ = environ or {}
    unknown = set(flags) - set(BY_PARAM)
    if unknown:
        raise ConfigurationError(f"not worker settings: {', '.join(sorted(unknown))}")
    builtin = WorkerSettings()
    settings = app_defaults
    sources: dict[str, str] = {}
    for s in SETTINGS:
        value, source = _given(s, flags, environ)
        if source is None:
            differs = _get(app_defaults, s.path) != _get(builtin, s.path)
            sources[s.path] = APP if differs else DEFAULT
            continue
        try:
            settings = _set(settings, s.path, value)
        except ConfigurationError as exc:
            raise SettingError(source, value, str(exc)) from None
        sources[s.path] = source
    return Resolved(settings, sources)


def _given(s: Setting, flags: Mapping[str, Any], environ: Mapping[str, str]) -> tuple[Any, Any]:
    """The value given for ``s`` by a flag (already converted by click) or the environment,
    and which of them gave it; (None, None) if neither did."""
    value, source = flags.get(s.param), s.flag
    if value is None:
        raw = environ.get(s.env)
        if raw is None or not raw.strip():
            return None, None
        try:
            value, source = s.type.convert(raw.strip(), None, None), s.env
        except click.BadParameter as exc:
            raise SettingError(s.env, raw, exc.message) from None
    return (None if value == AUTO else value), source


def _get(settings: Any, path: str) -> Any:
    for part in path.split("."):
        settings = getattr(settings, part)
    return settings


def _set(settings: Any, path: str, value: Any) -> Any:
    """A copy of ``settings`` with the dotted field replaced (its objects re-validated)."""
    head, _, rest = path.partition(".")
    if rest:
        value = _set(getattr(settings, head), rest, value)
    return dataclasses.replace(settings, **{head: value})
