"""``python manage.py conveyor_worker``: run the Django tasks of a ConveyorBackend.

It takes every worker setting flag of ``conveyor worker`` and resolves them as it does
(worker_config.resolve: flag, then ``CONVEYOR_*`` variable, then the app's WorkerSettings,
then the built-in default); only the queues fall back to the backend's ``QUEUES`` last.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
from collections.abc import Callable
from typing import Any

import click
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.module_loading import autodiscover_modules

from ....errors import ConveyorError
from ....worker_config import SETTINGS, Setting, SettingError, resolve
from ...compat import task_backends

log = logging.getLogger("conveyor.django")


class Command(BaseCommand):
    help = (
        "Run a Conveyor worker for the Django tasks of a TASKS backend "
        "(each installed app's `tasks` module is imported first). Each setting is the flag, "
        "else its CONVEYOR_* variable, else the built-in default (the queues: TASKS QUEUES)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--backend", default="default", help="TASKS alias (default: default)")
        for s in SETTINGS:
            names = [s.short, s.flag] if s.short else [s.flag]
            help_text = f"{s.help} [env var: {s.env}]"
            if s.path == "queues":
                help_text = f"{s.help} [env var: {s.env}; default: the backend's QUEUES]"
            if s.type is click.BOOL:
                parser.add_argument(
                    *names, dest=s.param, action=argparse.BooleanOptionalAction, help=help_text
                )
            else:
                parser.add_argument(
                    *names, dest=s.param, type=_converter(s), default=None, help=help_text
                )

    def handle(self, *args: Any, **options: Any) -> None:
        from ....logs import configure_logging
        from ....worker import serve
        from ...backend import ConveyorBackend

        alias = options["backend"]
        try:
            backend = task_backends[alias]
        except Exception as exc:
            raise CommandError(str(exc)) from None
        if not isinstance(backend, ConveyorBackend):
            raise CommandError(
                f"TASKS[{alias!r}] uses {type(backend).__module__}.{type(backend).__name__}, "
                "not conveyor.django.ConveyorBackend; pass --backend ALIAS of a Conveyor one"
            )
        autodiscover_modules("tasks")  # what registers the app's @task functions
        app = backend.worker_app()
        try:
            flags = {s.param: _flag(s, options.get(s.param)) for s in SETTINGS}
            resolved = resolve(app.worker_settings, flags, os.environ)
            settings = resolved.settings
            if settings.queues is None:
                if not backend.queues:
                    raise CommandError(f"TASKS[{alias!r}] sets no QUEUES: pass --queues a,b")
                settings = dataclasses.replace(settings, queues=tuple(sorted(backend.queues)))
            app.broker.server_info()  # one line naming the URL when Redis is not there
        except ConveyorError as exc:
            raise CommandError(" ".join(str(exc).split())) from None
        configure_logging("INFO")
        queues = settings.queues or ()
        self.stdout.write(
            f"conveyor worker: {len(app.tasks)} Django task(s) on {', '.join(queues)}, "
            f"namespace {app.namespace}"
        )
        self.stdout.flush()
        log.info("worker settings: %s", resolved.describe(), extra={"sources": resolved.sources})
        serve(app, settings)


def _converter(s: Setting) -> Callable[[str], Any]:
    """The argparse ``type`` of a setting: its click type's conversion, its error as
    argparse's (so ``--prefetch some`` is a usage error naming the option)."""

    def convert(text: str) -> Any:
        try:
            return s.type.convert(text, None, None)
        except click.BadParameter as exc:
            raise argparse.ArgumentTypeError(exc.message) from None

    convert.__name__ = s.type.name
    return convert


def _flag(s: Setting, value: Any) -> Any:
    """A flag's value, converted again: ``call_command(..., concurrency="7")`` passes the
    keyword as given, past argparse (the conversions take their own output unchanged)."""
    if value is None:
        return None
    try:
        return s.type.convert(value, None, None)
    except click.BadParameter as exc:
        raise SettingError(s.flag, value, exc.message) from None
