"""The dashboard's pages (GET, read-only) and its two actions on dead letters (POST, CSRF
checked, absent in read-only mode). Endpoints are plain functions: Starlette runs them in
its thread pool, where the package's sync read APIs belong.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import jinja2
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from .. import dead_letters, events, stats
from ..app import Conveyor
from ..cron_view import schedule_rows
from ..errors import ConfigurationError, ReplayRefused
from ..hooks import EVENTS
from ..job import JobState
from ..keys import is_entry_id, validate_name
from . import csrf, queries
from .series import Series, polylines

TEMPLATES = Path(__file__).parent / "templates"
#: Rows a list page shows at most.
LIMIT = 50
CHART_W, CHART_H = 600, 120
PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777")
#: How often the queue list is rebuilt with SCAN.
DISCOVER_EVERY_S = 15.0
STATES = [s.value for s in JobState if s is not JobState.UNKNOWN]
#: Newest events the events view reads to filter (the stream keeps about 10,000); the
#: overview's section shows fewer.
EVENTS_SCANNED = 500
OVERVIEW_EVENTS = 10


def job_url(base: str, job_id: str) -> str:
    """A job page's path: the id quoted, so no character of it can change the URL's shape."""
    return f"{base}/jobs/{quote(job_id, safe=':')}"


def utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def utc_ms(ms: int) -> str:
    """An event's time to the millisecond (several happen within a second)."""
    at = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    return at.strftime("%H:%M:%S.") + f"{ms % 1000:03d}"


class Pages:
    """The endpoints, bound to one app, its templates and the overview's samples."""

    def __init__(
        self,
        app: Conveyor,
        *,
        read_only: bool,
        token_login: bool,
        nav: Sequence[tuple[str, str]],
        live: Sequence[tuple[str, str]],
    ) -> None:
        self.app = app
        self.read_only = read_only
        self.token_login = token_login
        self.nav = list(nav)
        self.live = list(live)
        self.series = Series()
        self._discovered: list[str] = []
        self._discovered_at = -float("inf")
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(TEMPLATES),
            autoescape=True,  # every value is escaped: a job id with HTML in it stays text
            undefined=jinja2.StrictUndefined,
        )
        env.globals["job_url"] = job_url
        env.filters["utc"] = utc
        env.filters["utc_ms"] = utc_ms
        self.templates = Jinja2Templates(env=env)

    # -- rendering ------------------------------------------------------------------------
    def render(
        self, request: Request, name: str, context: dict[str, Any], status: int = 200
    ) -> Response:
        base = request.scope.get("root_path", "").rstrip("/")
        ctx = {
            "base": base,
            "csrf_token": csrf.token_for(request),
            "read_only": self.read_only,
            "token_login": self.token_login,
            "nav": self.nav,
            "namespace": self.app.namespace,
            **context,
        }
        response = self.templates.TemplateResponse(request, name, ctx, status_code=status)
        csrf.remember(request, response)
        return response

    def queues(self) -> list[str]:
        """The app's task queues and every queue with keys in the namespace. SCAN walks
        every key of the namespace (job records too), so it runs at most every
        DISCOVER_EVERY_S seconds, not on each 2 s poll."""
        now = time.monotonic()
        if now - self._discovered_at >= DISCOVER_EVERY_S:
            self._discovered = stats.discover_queues(self.app)
            self._discovered_at = now
        own = {t.options.queue for t in self.app.tasks.values()}
        return sorted(own | set(self._discovered))

    def _queue(self, request: Request) -> str:
        queue = request.query_params.get("queue") or self.app.default_queue
        return validate_name("queue", queue)

    # -- overview -------------------------------------------------------------------------
    def overview(self, request: Request) -> Response:
        context = {**self._overview_context(), "live": self.live}
        return self.render(request, "overview.html", context)

    def overview_partial(self, request: Request) -> Response:
        return self.render(request, "_overview.html", self._overview_context())

    def _overview_context(self) -> dict[str, Any]:
        rows = queries.overview(self.app, self.queues(), self.series)
        now = time.monotonic()
        span = self.series.span(now)
        charts = []
        for title, unit, read in (
            ("Throughput", "jobs/s", self.series.throughput),
            ("Queue wait (oldest waiting job)", "s", self.series.wait),
        ):
            lines, top = polylines(
                {r.queue: read(r.queue) for r in rows},
                now,
                span,
                CHART_W,
                CHART_H,
            )
            charts.append({"title": title, "unit": unit, "lines": lines, "top": top})
        colors = {r.queue: PALETTE[i % len(PALETTE)] for i, r in enumerate(rows)}
        return {
            "rows": rows,
            "charts": charts,
            "colors": colors,
            "width": CHART_W,
            "height": CHART_H,
            "span": f"{span / 60:.0f} min" if span >= 120 else f"{span:.0f} s",
        }

    # -- jobs -----------------------------------------------------------------------------
    def jobs(self, request: Request) -> Response:
        queue = self._queue(request)
        task = request.query_params.get("task") or None
        state = request.query_params.get("state") or None
        if state is not None and state not in STATES:
            raise ConfigurationError(f"unknown state {state!r}; one of {', '.join(STATES)}")
        entries = queries.recent_jobs(self.app, queue, task, state, LIMIT)
        rows = [(e, self.app.redacted(e.fields).get("args", "")) for e in entries]
        return self.render(
            request,
            "jobs.html",
            {
                "queue": queue,
                "queues": self.queues(),
                "task": task or "",
                "state": state or "",
                "states": STATES,
                "rows": rows,
            },
        )

    def find_job(self, request: Request) -> Response:
        job_id = (request.query_params.get("id") or "").strip()
        base = request.scope.get("root_path", "").rstrip("/")
        if not job_id:
            return RedirectResponse(f"{base}/jobs", status_code=303)
        return RedirectResponse(job_url(base, job_id), status_code=303)

    def job(self, request: Request) -> Response:
        job_id = request.path_params["job_id"]
        view = queries.job_view(self.app, job_id)
        return self.render(request, "job.html", {"view": view, "JobState": JobState})

    # -- dead letters ---------------------------------------------------------------------
    def dead(self, request: Request) -> Response:
        queue = self._queue(request)
        task = request.query_params.get("task") or None
        reason = request.query_params.get("reason") or None
        rows = [
            (job, self.app.redacted(job.fields).get("dead_error", ""))
            for job in dead_letters.list_dead(self.app, queue, LIMIT, task=task, reason=reason)
        ]
        return self.render(
            request,
            "dead.html",
            {
                "queue": queue,
                "queues": self.queues(),
                "task": task or "",
                "reason": reason or "",
                "rows": rows,
                "notice": request.query_params.get("notice", ""),
            },
        )

    async def dead_action(self, request: Request) -> Response:
        form = await csrf.checked_form(request)
        action = request.path_params["action"]
        if action not in ("replay", "delete"):
            raise HTTPException(404, f"no action {action!r} on dead letters")
        queue = validate_name("queue", str(form.get("queue") or ""))
        task = str(form.get("task") or "") or None
        reason = str(form.get("reason") or "") or None
        entries = [str(e) for e in form.getlist("entry")]
        bad = [e for e in entries if not is_entry_id(e)]
        if bad:
            raise ConfigurationError(f"not a stream entry id: {bad[0]!r}")
        if not entries and form.get("all") != "1":
            raise ConfigurationError("name an entry, or ask for all that match the filter")
        notice = await run_in_threadpool(self._apply, action, queue, entries, task, reason)
        base = request.scope.get("root_path", "").rstrip("/")
        query = {"queue": queue, "task": task or "", "reason": reason or "", "notice": notice}
        return RedirectResponse(f"{base}/dead?{urlencode(query)}", status_code=303)

    def _apply(
        self, action: str, queue: str, entries: list[str], task: str | None, reason: str | None
    ) -> str:
        if not entries:
            if action == "delete" and task is None and reason is None:
                return f"deleted {dead_letters.purge(self.app, queue)}"
            entries = [j.entry_id for j in dead_letters.find(self.app, queue, task, reason)][::-1]
        if action == "delete":
            return f"deleted {dead_letters.delete(self.app, queue, entries)}"
        done = skipped = 0
        for entry in entries:
            try:
                job_id = dead_letters.replay(self.app, queue, entry)
            except ReplayRefused:
                job_id = None
            if job_id:
                done += 1
            else:
                skipped += 1
        return f"replayed {done}" + (f", skipped {skipped}" if skipped else "")

    # -- delayed, cron, workers -----------------------------------------------------------
    def delayed(self, request: Request) -> Response:
        queue = self._queue(request)
        rows = queries.delayed(self.app, queue, LIMIT)
        return self.render(
            request, "delayed.html", {"queue": queue, "queues": self.queues(), "rows": rows}
        )

    def cron(self, request: Request) -> Response:
        return self.render(request, "cron.html", {"rows": schedule_rows(self.app, 3)})

    def workers(self, request: Request) -> Response:
        return self.render(request, "workers.html", {"rows": queries.workers(self.app)})

    # -- events ---------------------------------------------------------------------------
    def events(self, request: Request) -> Response:
        return self.render(request, "events.html", self._events_context(request, LIMIT))

    def events_partial(self, request: Request) -> Response:
        limit = OVERVIEW_EVENTS if request.query_params.get("brief") else LIMIT
        return self.render(request, "_events.html", self._events_context(request, limit))

    def _events_context(self, request: Request, limit: int) -> dict[str, Any]:
        """The newest events, newest first, of one queue and/or kind (the filter applies to
        the last EVENTS_SCANNED of the stream: it is a live feed, not a search)."""
        queue = request.query_params.get("queue") or ""
        kind = request.query_params.get("kind") or ""
        if queue:
            validate_name("queue", queue)
        if kind and kind not in EVENTS:
            raise ConfigurationError(f"unknown event kind {kind!r}; one of {', '.join(EVENTS)}")
        rows = [
            e
            for e in reversed(events.latest(self.app, EVENTS_SCANNED))
            if (not queue or e.queue == queue) and (not kind or e.kind == kind)
        ][:limit]
        return {
            "events_on": self.app.hooks.events is not None,
            "rows": rows,
            "queue": queue,
            "queues": self.queues(),
            "kind": kind,
            "kinds": EVENTS,
            "filter": urlencode({"queue": queue, "kind": kind}),
            "scanned": EVENTS_SCANNED,
        }

    # -- token login ----------------------------------------------------------------------
    def login_form(self, request: Request, status: int = 200, error: str = "") -> Response:
        return self.render(request, "login.html", {"error": error}, status=status)
