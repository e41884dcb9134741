"""The web dashboard: queues, jobs, dead letters, delayed jobs, cron and workers of one app.

Needs the ``dashboard`` extra (``pip install 'conveyor-queue[dashboard]'``): Starlette,
Jinja2 and uvicorn are imported only here. Serve it with ``conveyor dashboard --app
tasks:app`` or mount ``asgi(app)`` into an ASGI app of your own.
"""

from __future__ import annotations

try:
    from .app import asgi
    from .auth import BasicAuth, TokenAuth, check_bind
except ImportError as exc:  # pragma: no cover - depends on what is installed
    from ..errors import ConfigurationError

    raise ConfigurationError(
        f"the dashboard needs the 'dashboard' extra ({exc.name} is missing): "
        "pip install 'conveyor-queue[dashboard]'"
    ) from exc

__all__ = ["BasicAuth", "TokenAuth", "asgi", "check_bind"]
