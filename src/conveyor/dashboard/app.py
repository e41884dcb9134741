"""The ASGI app: routes, auth, CSRF, error pages and security headers around the pages."""

from __future__ import annotations

import hmac
import importlib.util
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import redis
from starlette.applications import Starlette
from starlette.authentication import AuthenticationError
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..app import Conveyor
from ..errors import ConfigurationError, ConveyorError
from . import csrf
from .auth import SESSION_COOKIE, Auth, Backend, BasicAuth, TokenAuth
from .pages import Pages

STATIC = Path(__file__).parent / "static"
log = logging.getLogger(__name__)

#: Sent with every response: scripts and styles from the dashboard only (htmx is vendored),
#: never framed, no referrer (a job page's path holds the job id), never cached.
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    ),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)


def asgi(
    app: Conveyor,
    *,
    auth: Auth | None = None,
    read_only: bool = False,
    extra_routes: Sequence[BaseRoute] = (),
    extra_nav: Sequence[tuple[str, str]] = (),
    live_partials: Sequence[tuple[str, str]] = (),
    metrics: bool | None = None,
) -> Starlette:
    """The dashboard of ``app`` as an ASGI app, to serve (``conveyor dashboard``) or mount
    (``starlette_app.mount("/conveyor", asgi(app, auth=TokenAuth(...)))``).

    ``auth``: TokenAuth or BasicAuth; without it anyone who reaches the app can use it, so
    serve it on loopback only (``conveyor dashboard`` refuses otherwise). ``read_only``
    leaves out every action. ``extra_routes`` are served behind the same auth (a
    ``/metrics`` route, a live events page); ``extra_nav`` adds ``(label, path)`` links to
    the menu, and ``live_partials`` adds ``(title, path)`` sections to the overview, each an
    HTML fragment it loads every 2 s. Paths are relative to the dashboard's root.

    Built in: an Events page and a "Recent events" section on the overview, fed by the
    events stream (``Conveyor(events=True)``), and ``/metrics`` for Prometheus (the queue
    gauges read from Redis, and the counters of this process's registry), behind the same
    auth. ``metrics``: None serves it when prometheus_client is installed, True requires it,
    False leaves it out.
    """
    pages = Pages(
        app,
        read_only=read_only,
        token_login=isinstance(auth, TokenAuth),
        nav=extra_nav,
        live=[("Recent events", "/partials/events?brief=1"), *live_partials],
    )
    routes: list[BaseRoute] = [
        Route("/", pages.overview, name="overview"),
        Route("/partials/overview", pages.overview_partial, name="overview_partial"),
        Route("/jobs", pages.jobs, name="jobs"),
        Route("/jobs/find", pages.find_job, name="find_job"),
        Route("/jobs/{job_id:path}", pages.job, name="job"),
        Route("/dead", pages.dead, name="dead"),
        Route("/delayed", pages.delayed, name="delayed"),
        Route("/cron", pages.cron, name="cron"),
        Route("/workers", pages.workers, name="workers"),
        Route("/events", pages.events, name="events"),
        Route("/partials/events", pages.events_partial, name="events_partial"),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
        *_metrics_route(pages, metrics),
        *extra_routes,
    ]
    if not read_only:
        routes.append(
            Route("/dead/{action:str}", pages.dead_action, methods=["POST"], name="dead_action")
        )
    middleware = [Middleware(SecurityHeaders)]
    if isinstance(auth, TokenAuth):
        routes += _token_login(pages, auth)
    if auth is not None:
        middleware.append(
            Middleware(
                AuthenticationMiddleware,
                backend=Backend(auth),
                on_error=_unauthorized(pages, auth),
            )
        )

    def bad_input(request: Request, exc: Exception) -> Response:
        return pages.render(request, "error.html", {"message": str(exc), "status": 400}, 400)

    def redis_down(request: Request, exc: Exception) -> Response:
        log.warning("dashboard: Redis error: %s", type(exc).__name__)
        message = f"Redis did not answer as expected ({type(exc).__name__}); try again"
        return pages.render(request, "error.html", {"message": message, "status": 503}, 503)

    def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if request.method == "POST" or exc.status_code >= 500 or exc.status_code == 404:
            context = {"message": exc.detail, "status": exc.status_code}
            return pages.render(request, "error.html", context, exc.status_code)
        return PlainTextResponse(exc.detail, exc.status_code, headers=exc.headers)

    return Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={
            ConveyorError: bad_input,
            redis.RedisError: redis_down,
            HTTPException: http_error,
        },
    )


def _metrics_route(pages: Pages, wanted: bool | None) -> list[BaseRoute]:
    """``/metrics``: what ``conveyor.metrics.exposition`` shows, for the queues the overview
    shows. Needs prometheus_client (in the ``dashboard`` and ``metrics`` extras)."""
    if wanted is False:
        return []
    if importlib.util.find_spec("prometheus_client") is None:
        if wanted:
            raise ConfigurationError(
                "the dashboard's /metrics needs prometheus-client: "
                "pip install 'conveyor-queue[metrics]' (or pass metrics=False)"
            )
        return []
    from .. import metrics

    def scrape(request: Request) -> Response:
        body, content_type = metrics.exposition(pages.app, pages.queues())
        return Response(body, media_type=content_type)

    return [Route("/metrics", scrape, name="metrics")]


def _unauthorized(
    pages: Pages, auth: Auth
) -> Callable[[HTTPConnection, AuthenticationError], Response]:
    def on_error(conn: HTTPConnection, exc: AuthenticationError) -> Response:
        if isinstance(auth, BasicAuth):
            return PlainTextResponse(
                "credentials required",
                401,
                headers={"WWW-Authenticate": 'Basic realm="Conveyor", charset="UTF-8"'},
            )
        request = Request(conn.scope)
        accepts_html = "text/html" in conn.headers.get("accept", "")
        if not accepts_html:
            return PlainTextResponse(
                "credentials required", 401, headers={"WWW-Authenticate": "Bearer"}
            )
        return pages.login_form(request, status=401)

    return on_error


def _token_login(pages: Pages, auth: TokenAuth) -> list[BaseRoute]:
    """A login form for browsers: a good token sets the session cookie."""

    async def login(request: Request) -> Response:
        if request.method == "GET":
            return pages.login_form(request)
        form = await csrf.checked_form(request)
        token = str(form.get("token") or "")
        if not hmac.compare_digest(token.encode(), auth.token.encode()):
            return pages.login_form(request, 401, "wrong token")
        base = request.scope.get("root_path", "").rstrip("/")
        response = RedirectResponse(f"{base}/", status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            auth.session_value(),
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path=request.scope.get("root_path") or "/",
        )
        return response

    async def logout(request: Request) -> Response:
        await csrf.checked_form(request)
        base = request.scope.get("root_path", "").rstrip("/")
        response = RedirectResponse(f"{base}/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path=request.scope.get("root_path") or "/")
        return response

    return [
        Route("/login", login, methods=["GET", "POST"], name="login"),
        Route("/logout", logout, methods=["POST"], name="logout"),
    ]
