"""``python manage.py conveyor_worker``: run the Django tasks of a ConveyorBackend."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.module_loading import autodiscover_modules

from ....errors import ConveyorError
from ....settings import Leases, WorkerSettings
from ...compat import task_backends


class Command(BaseCommand):
    help = (
        "Run a Conveyor worker for the Django tasks of a TASKS backend "
        "(each installed app's `tasks` module is imported first)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--backend", default="default", help="TASKS alias (default: default)")
        parser.add_argument("-c", "--concurrency", type=int, default=10, help="Jobs at once.")
        parser.add_argument(
            "-q", "--queues", default=None, help="Comma-separated queues (default: QUEUES)."
        )
        parser.add_argument("--lease", type=float, default=30.0, help="Lease timeout (s).")
        parser.add_argument("--grace", type=float, default=30.0, help="Shutdown grace (s).")

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
        if options["queues"]:
            queues = tuple(q.strip() for q in options["queues"].split(",") if q.strip())
        elif backend.queues:
            queues = tuple(sorted(backend.queues))
        else:
            raise CommandError(f"TASKS[{alias!r}] sets no QUEUES: pass --queues a,b")
        try:
            settings = WorkerSettings(
                queues=queues,
                concurrency=options["concurrency"],
                leases=Leases(timeout=options["lease"]),
                shutdown_grace=options["grace"],
            )
            app.broker.server_info()  # one line naming the URL when Redis is not there
        except ConveyorError as exc:
            raise CommandError(" ".join(str(exc).split())) from None
        configure_logging("INFO")
        self.stdout.write(
            f"conveyor worker: {len(app.tasks)} Django task(s) on {', '.join(queues)}, "
            f"namespace {app.namespace}"
        )
        self.stdout.flush()
        serve(app, settings)
