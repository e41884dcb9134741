"""The dashboard over HTTP (a real uvicorn, a real worker, a real Redis): auth, CSRF,
read-only mode, bad input, redaction, mounting; and the pure chart arithmetic."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Mount, Route

from conveyor import Conveyor, current_job
from conveyor.cli import main
from conveyor.dashboard import BasicAuth, TokenAuth, asgi, check_bind
from conveyor.dashboard.series import Point, Sample, Series, polylines
from conveyor.errors import ConfigurationError
from conveyor.keys import events_key
from conveyor.testing import result
from tests.conftest import fast, wait_until, worker_thread
from tests.dashboard_server import serve

TOKEN = "s3cret-token-for-tests-0123"


def register(app: Conveyor) -> dict[str, Any]:
    @app.task(retries=0)
    def boom(n: int) -> None:
        raise ValueError(f"boom {n}")

    @app.task
    def double(n: int) -> int:
        return n * 2

    return {"boom": boom, "double": double}


def dead_count(app: Conveyor) -> int:
    return int(app.broker.client.xlen(app.keys("default").dead))


def csrf_of(client: httpx.Client, path: str = "/dead") -> str:
    """Load a page (which sets the CSRF cookie) and read the token from its forms."""
    page = client.get(path)
    assert page.status_code == 200, page.text
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert found, "no CSRF token in the page's forms"
    return found.group(1)


@pytest.fixture
def one_dead(app: Conveyor) -> Iterator[str]:
    """A job of ``boom`` that ended in the dead-letter stream; yields its entry id."""
    tasks = register(app)
    job = tasks["boom"].enqueue(1)
    with worker_thread(app, fast()):
        wait_until(lambda: dead_count(app) == 1, 15, "the failed job to be dead-lettered")
    entry = app.broker.client.xrange(app.keys("default").dead)[0][0].decode()
    assert job.status().value == "dead"
    yield entry


# -- CSRF ---------------------------------------------------------------------------------
def test_action_without_csrf_token_is_refused_and_changes_nothing(
    app: Conveyor, one_dead: str
) -> None:
    with serve(asgi(app)) as url, httpx.Client(base_url=url) as client:
        token = csrf_of(client)
        form = {"queue": "default", "entry": one_dead}
        missing = client.post("/dead/delete", data=form)
        assert missing.status_code == 403
        assert "CSRF" in missing.text
        wrong = client.post("/dead/delete", data={**form, "csrf_token": "x" + token})
        assert wrong.status_code == 403
        # The right token from a client without the cookie (another site's form) is refused.
        with httpx.Client(base_url=url) as stranger:
            assert (
                stranger.post("/dead/delete", data={**form, "csrf_token": token}).status_code == 403
            )
        assert dead_count(app) == 1
        ok = client.post("/dead/delete", data={**form, "csrf_token": token})
        assert ok.status_code == 303
        assert "notice=deleted+1" in ok.headers["location"]
        assert dead_count(app) == 0


def test_non_ascii_csrf_field_is_refused_with_403_not_500(app: Conveyor, one_dead: str) -> None:
    with serve(asgi(app)) as url, httpx.Client(base_url=url) as client:
        csrf_of(client)
        form = {"queue": "default", "entry": one_dead, "csrf_token": "\u00e9"}
        refused = client.post("/dead/delete", data=form)
        assert refused.status_code == 403, refused.text
        assert "CSRF" in refused.text
    assert dead_count(app) == 1


def test_a_planted_csrf_cookie_cannot_forge_an_action_under_basic_auth(
    app: Conveyor, one_dead: str
) -> None:
    """A sibling subdomain can plant a cookie and submit its value (the plain double-submit
    forgery), but the form's token is signed with credentials it never sees."""
    auth = ("ops", "correct horse")
    with serve(asgi(app, auth=BasicAuth(*auth))) as url, httpx.Client(base_url=url, auth=auth) as c:
        form = {"queue": "default", "entry": one_dead}
        planted = "planted-by-a-sibling-subdomain"
        c.cookies.set("conveyor_csrf", planted)
        forged = c.post("/dead/delete", data={**form, "csrf_token": planted})
        assert forged.status_code == 403
        assert dead_count(app) == 1
        token = csrf_of(c)  # the page signs the cookie it was sent
        assert token != planted
        ok = c.post("/dead/delete", data={**form, "csrf_token": token})
        assert ok.status_code == 303
    assert dead_count(app) == 0


def test_delete_all_matching_a_filter_keeps_the_others(app: Conveyor) -> None:
    tasks = register(app)
    for n in range(3):
        tasks["boom"].enqueue(n)
    with worker_thread(app, fast()):
        wait_until(lambda: dead_count(app) == 3, 15, "three dead jobs")
    # A dead job of another task, which a filter on "boom" must not touch.
    entry = app.broker.client.xrange(app.keys("default").dead)[0][1]
    other = {k: v for k, v in entry.items() if k != b"task"}
    app.broker.client.xadd(app.keys("default").dead, {**other, b"task": b"other"})
    with serve(asgi(app)) as url, httpx.Client(base_url=url) as client:
        token = csrf_of(client)
        form = {"queue": "default", "task": "boom", "all": "1", "csrf_token": token}
        assert client.post("/dead/delete", data=form).status_code == 303
    left = app.broker.client.xrange(app.keys("default").dead)
    assert [e[1][b"task"] for e in left] == [b"other"]


# -- auth ---------------------------------------------------------------------------------
def test_token_auth_without_credentials_gets_401(app: Conveyor) -> None:
    with serve(asgi(app, auth=TokenAuth(TOKEN))) as url, httpx.Client(base_url=url) as client:
        for path in ("/", "/jobs", "/dead", "/workers", "/partials/overview"):
            assert client.get(path).status_code == 401, path
        assert client.get("/", headers={"Authorization": "Bearer nope"}).status_code == 401
        assert client.post("/dead/replay", data={}).status_code == 401
        assert client.get("/", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        # A browser gets the login form with its 401; a good token there opens a session.
        page = client.get("/", headers={"Accept": "text/html"})
        assert page.status_code == 401 and 'name="token"' in page.text
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert token
        login = client.post("/login", data={"token": TOKEN, "csrf_token": token.group(1)})
        assert login.status_code == 303
        assert TOKEN not in login.headers.get("set-cookie", "")
        assert client.get("/").status_code == 200
        assert client.get("/static/htmx.min.js").status_code == 200


def test_basic_auth_without_credentials_gets_401_and_a_challenge(app: Conveyor) -> None:
    auth = BasicAuth("ops", "correct horse")
    with serve(asgi(app, auth=auth)) as url:
        bare = httpx.get(url + "/")
        assert bare.status_code == 401
        assert bare.headers["www-authenticate"].startswith("Basic")
        assert httpx.get(url + "/", auth=("ops", "wrong")).status_code == 401
        assert httpx.get(url + "/", auth=("ops", "correct horse")).status_code == 200


def test_only_static_files_and_the_token_login_form_are_open(app: Conveyor) -> None:
    # An extra route whose path merely starts like an open one stays behind the auth.
    audit = Route("/login-audit", lambda request: HTMLResponse("secret audit data"))
    for auth in (TokenAuth(TOKEN), BasicAuth("ops", "correct horse")):
        with serve(asgi(app, auth=auth, extra_routes=[audit])) as url:
            for path in ("/login-audit", "/loginx", "/login/../workers", "/staticfoo"):
                got = httpx.get(url + path)
                assert got.status_code == 401, (auth, path, got.status_code)
                assert "secret audit data" not in got.text
            assert httpx.get(url + "/static/htmx.min.js").status_code == 200
            login = httpx.get(url + "/login")
            # Basic auth has no login form: /login is an ordinary path behind the auth.
            assert login.status_code == (200 if isinstance(auth, TokenAuth) else 401), auth
            assert httpx.get(url + "/login-audit", headers=_creds(auth)).text == (
                "secret audit data"
            )


def _creds(auth: TokenAuth | BasicAuth) -> dict[str, str]:
    if isinstance(auth, TokenAuth):
        return {"Authorization": f"Bearer {auth.token}"}
    pair = base64.b64encode(f"{auth.username}:{auth.password}".encode()).decode()
    return {"Authorization": f"Basic {pair}"}


def test_binding_beyond_loopback_without_auth_refuses_to_start() -> None:
    with pytest.raises(
        ConfigurationError,
        match=re.escape("refusing to serve the dashboard on 0.0.0.0 without auth"),
    ):
        check_bind("0.0.0.0", None)
    check_bind("0.0.0.0", TokenAuth(TOKEN))
    for host in ("127.0.0.1", "::1", "localhost"):
        check_bind(host, None)
    run = CliRunner().invoke(main, ["dashboard", "--app", "tests.cliapp:app", "--host", "0.0.0.0"])
    assert run.exit_code == 1
    assert "refusing to serve the dashboard on 0.0.0.0 without auth" in run.output
    short = CliRunner().invoke(
        main, ["dashboard", "--app", "tests.cliapp:app", "--host", "0.0.0.0", "--token", "short"]
    )
    assert short.exit_code == 1 and "at least 16 characters" in short.output


def test_conveyor_dashboard_command_serves_on_loopback(redis_url: str, namespace: str) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "CONVEYOR_REDIS_URL": redis_url, "TEST_NAMESPACE": namespace}
    cmd = [sys.executable, "-m", "conveyor", "dashboard", "--app", "tests.cliapp:app"]
    proc = subprocess.Popen(
        [*cmd, "--port", str(port), "--read-only"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        page = None

        def answers() -> bool:
            nonlocal page
            try:
                page = httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
            except httpx.TransportError:
                return proc.poll() is not None  # stop waiting if it died
            return True

        wait_until(answers, 20, "conveyor dashboard to answer")
        assert page is not None, proc.communicate()[0]
        assert page.status_code == 200 and "read-only" in page.text
        assert namespace in page.text
        scraped = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
        assert scraped.status_code == 200 and "conveyor_workers_live 0.0" in scraped.text
    finally:
        proc.terminate()
        out = proc.communicate(timeout=10)[0]
    assert "Conveyor dashboard of tests.cliapp:app on http://127.0.0.1:" in out


# -- read-only, bad input, redaction, mounting --------------------------------------------
def test_read_only_has_no_actions(app: Conveyor, one_dead: str) -> None:
    with serve(asgi(app, read_only=True)) as url, httpx.Client(base_url=url) as client:
        page = client.get("/dead")
        assert one_dead in page.text
        assert 'method="post"' not in page.text
        posted = client.post("/dead/replay", data={"queue": "default", "entry": one_dead})
        assert posted.status_code in (404, 405)
    assert dead_count(app) == 1


def test_job_id_with_html_is_escaped(app: Conveyor) -> None:
    evil = '<img src=x onerror="alert(1)">'
    # An entry whose id field carries markup, as a hostile producer could write it.
    app.broker.client.xadd(
        app.keys("default").stream("normal"),
        {"version": 1, "task": "t", "args": "[]", "kwargs": "{}", "id": evil},
    )
    with serve(asgi(app)) as url, httpx.Client(base_url=url) as client:
        history = client.get("/jobs")
        assert history.status_code == 200
        assert evil not in history.text
        assert "&lt;img src=x onerror=" in history.text
        lookup = client.get("/jobs/find", params={"id": evil}, follow_redirects=True)
        assert lookup.status_code == 400
        assert evil not in lookup.text and "not a Conveyor job id" in lookup.text
        assert client.get("/jobs", params={"state": "<b>"}).status_code == 400
        assert client.get("/dead", params={"queue": "no{such}"}).status_code == 400
        # No form on an empty page, but the cookie is set: sign it as a page would (no auth).
        token = hmac.new(
            b"conveyor-dashboard-csrf:", client.cookies["conveyor_csrf"].encode(), hashlib.sha256
        ).hexdigest()
        bad = client.post(
            "/dead/replay", data={"queue": "default", "entry": "1-x", "csrf_token": token}
        )
        assert bad.status_code == 400


def test_job_page_shows_arguments_through_the_redaction_hook(
    redis_url: str, namespace: str
) -> None:
    def redact(task: str, fields: dict[str, str]) -> dict[str, str]:
        return {**fields, "args": '["***"]'} if task == "double" else fields

    app = Conveyor(redis_url, namespace=namespace, redact=redact)
    try:
        job = register(app)["double"].enqueue(21)
        with worker_thread(app, fast()):
            assert result(job) == 42
        with serve(asgi(app)) as url, httpx.Client(base_url=url) as client:
            page = client.get(f"/jobs/{job.id}").text
            assert "***" in page and "21" not in page.split('id="args"')[1].split("</pre>")[0]
            assert "42" in page.split('id="result"')[1].split("</pre>")[0]
    finally:
        app.close()


def test_mounted_under_a_prefix_links_stay_inside_it(app: Conveyor) -> None:
    def feed(request: Request) -> HTMLResponse:
        return HTMLResponse("<p>an event</p>")

    dashboard = asgi(
        app,
        auth=TokenAuth(TOKEN),
        extra_routes=[Route("/feed", feed)],
        extra_nav=[("Feed", "/feed")],
        live_partials=[("Feed", "/feed")],
    )
    outer = Starlette(routes=[Mount("/conveyor", dashboard)])
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    with serve(outer) as url, httpx.Client(base_url=url, headers=bearer) as client:
        page = client.get("/conveyor/")
        assert page.status_code == 200
        assert 'href="/conveyor/jobs"' in page.text
        # Routes, links and live sections of one's own: behind the same auth.
        assert 'href="/conveyor/feed">Feed</a>' in page.text
        assert 'hx-get="/conveyor/feed"' in page.text
        assert client.get("/conveyor/feed").text == "<p>an event</p>"
        assert httpx.get(url + "/conveyor/feed").status_code == 401
        # The built-in events section and /metrics stay inside the prefix too.
        assert 'hx-get="/conveyor/partials/events?brief=1"' in page.text
        assert 'href="/conveyor/events">Events</a>' in page.text
        assert client.get("/conveyor/metrics").status_code == 200
        assert httpx.get(url + "/conveyor/metrics").status_code == 401
        assert 'src="/conveyor/static/htmx.min.js"' in page.text
        assert client.get("/conveyor/static/htmx.min.js").status_code == 200
        assert "path=/conveyor" in page.headers["set-cookie"].lower()


def test_delayed_cron_and_workers_pages_show_what_redis_holds(app: Conveyor) -> None:
    release = threading.Event()

    @app.task
    def convert(doc: str) -> str:
        current_job().progress(0.4, "page 2 of 5")
        release.wait(10)
        return doc

    @app.cron("*/5 * * * *")
    def nightly() -> None:
        pass

    later = convert.enqueue_in(3600, "later.pdf")
    running = convert.enqueue("now.pdf")
    with worker_thread(app, fast(concurrency=3)) as worker:
        try:
            wait_until(lambda: running.progress() is not None, 15, "the job to report progress")
            with serve(asgi(app)) as url, httpx.Client(base_url=url) as client:
                delayed = client.get("/delayed").text
                assert later.id in delayed and "convert" in delayed and "scheduled" in delayed
                cron = client.get("/cron").text
                assert "nightly" in cron and "*/5 * * * *" in cron
                workers = client.get("/workers").text
                assert worker.consumer in workers
                assert running.id in workers  # its running job
                assert ">3<" in workers  # concurrency
                job = client.get(f"/jobs/{running.id}").text
                assert "running" in job and "page 2 of 5" in job and 'value="0.4"' in job
        finally:
            release.set()
        assert result(running) == "now.pdf"


# -- /metrics -----------------------------------------------------------------------------
def gauges(text: str) -> dict[tuple[str, str], float]:
    """(sample name, queue label) -> value, from an exposition."""
    return {
        (s.name, s.labels.get("queue", "")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_through_the_dashboard_show_queue_gauges_behind_its_auth(app: Conveyor) -> None:
    tasks = register(app)
    lost = tasks["boom"].enqueue(1)
    with worker_thread(app, fast()):
        wait_until(lambda: lost.status().value == "dead", 15, "the job to die")
    for n in range(3):
        tasks["double"].enqueue(n)
    with serve(asgi(app, auth=TokenAuth(TOKEN))) as url:
        assert httpx.get(url + "/metrics").status_code == 401
        wrong = httpx.get(url + "/metrics", headers={"Authorization": "Bearer not-the-token"})
        assert wrong.status_code == 401
        scraped = httpx.get(url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert scraped.status_code == 200
        assert scraped.headers["content-type"].startswith("text/plain; version=")
        seen = gauges(scraped.text)
        assert seen[("conveyor_queue_ready_jobs", "default")] == 3
        assert seen[("conveyor_queue_dead_jobs", "default")] == 1
        assert seen[("conveyor_queue_running_jobs", "default")] == 0
        assert seen[("conveyor_queue_lag_seconds", "default")] >= 0
        assert seen[("conveyor_workers_live", "")] == 0
    basic = BasicAuth("prometheus", "scrape-password")
    with serve(asgi(app, auth=basic)) as url:
        assert httpx.get(url + "/metrics").status_code == 401
        scraped = httpx.get(url + "/metrics", auth=("prometheus", "scrape-password"))
        assert gauges(scraped.text)[("conveyor_queue_ready_jobs", "default")] == 3
    with serve(asgi(app, metrics=False)) as url:
        assert httpx.get(url + "/metrics").status_code == 404


# -- events -------------------------------------------------------------------------------
def test_events_view_lists_the_newest_filtered_and_escaped(redis_url: str, namespace: str) -> None:
    app = Conveyor(redis_url, namespace=namespace, events=True)
    try:
        tasks = register(app)
        lost, done = tasks["boom"].enqueue(7), tasks["double"].enqueue(4)
        with worker_thread(app, fast()):
            assert result(done) == 8
            wait_until(lambda: lost.status().value == "dead", 15, "the job to die")
            wait_until(lambda: app.broker.client.xlen(events_key(namespace)) >= 5, 10, "events")
        evil = '<img src=x onerror="alert(1)">'
        hostile = {"kind": "started", "job": evil, "queue": "default", "task": "t", "attempt": 1}
        app.broker.client.xadd(
            events_key(namespace), {"event": json.dumps({**hostile, "worker": "w", "at": 1})}
        )
        with serve(asgi(app)) as url, httpx.Client(base_url=url) as client:
            page = client.get("/events").text
            kinds = re.findall(r'<tr data-kind="(\w+)">', page)
            # Newest first: the hostile entry, then the worker's five in the order they came.
            assert kinds[0] == "started" and sorted(kinds[1:]) == sorted(
                ["started", "started", "succeeded", "failed", "dead"]
            )
            assert f'href="/jobs/{done.id}"' in page and f'href="/jobs/{lost.id}"' in page
            assert "boom 7" not in page  # errors stay on the job's page
            assert evil not in page and "&lt;img src=x onerror=" in page
            dead = client.get("/events", params={"kind": "dead"}).text
            assert re.findall(r'<tr data-kind="(\w+)">', dead) == ["dead"] and lost.id in dead
            assert done.id not in dead.split("<tbody>")[1]
            other = client.get("/partials/events", params={"queue": "other"}).text
            assert "No events that match yet." in other
            assert client.get("/events", params={"kind": "<b>"}).status_code == 400
            assert client.get("/events", params={"queue": "no{such}"}).status_code == 400
            brief = client.get("/partials/events", params={"brief": "1"}).text
            assert brief.count("<tr data-kind=") == 6
    finally:
        app.close()


def test_events_off_the_view_says_how_to_turn_them_on(app: Conveyor) -> None:
    with serve(asgi(app)) as url, httpx.Client(base_url=url) as client:
        for path in ("/events", "/partials/events?brief=1"):
            page = client.get(path)
            assert page.status_code == 200, path
            assert "The events stream is off for this app" in page.text
            assert "Conveyor(..., events=True)" in page.text
            assert "<table" not in page.text.split('id="events-off"')[1]
        assert 'hx-get="/partials/events?brief=1"' in client.get("/").text
        # Workers of another app object may still write the stream: shown under the note.
        event = {"kind": "succeeded", "job": "default:n:1-0", "queue": "default", "task": "t"}
        app.broker.client.xadd(
            events_key(app.namespace),
            {"event": json.dumps({**event, "attempt": 1, "worker": "w", "at": 1})},
        )
        page = client.get("/events").text
        assert "The events stream is off for this app" in page
        assert re.findall(r'<tr data-kind="(\w+)">', page) == ["succeeded"]


# -- charts -------------------------------------------------------------------------------
def test_throughput_is_jobs_finished_per_second_between_samples() -> None:
    series = Series(window_s=60, min_interval_s=1)
    series.add({"q": Sample(10.0, 100, 0.0)})
    series.add({"q": Sample(12.0, 130, 1.5)})
    series.add({"q": Sample(13.0, 5, 0.0)})  # group recreated: the count restarts
    assert series.throughput("q") == [Point(12.0, 15.0), Point(13.0, 0.0)]
    assert [p.value for p in series.wait("q")] == [0.0, 1.5, 0.0]
    assert not series.due(13.5) and series.due(14.0)
    assert series.span(20.0) == 60.0  # young: at least a minute
    series.add({"q": Sample(100.0, 5, 0.0)})
    assert [p.at for p in series.wait("q")] == [100.0]  # older than the window: dropped
    assert series.span(130.0) == 60.0
    longer = Series(window_s=300)
    longer.add({"q": Sample(100.0, 5, 0.0)})
    assert longer.span(190.0) == 90.0  # the charts cover what was sampled
    assert longer.span(1000.0) == 300.0


def test_polylines_scale_into_the_box() -> None:
    lines, top = polylines(
        {"a": [Point(0.0, 0.0), Point(30.0, 5.0), Point(60.0, 10.0)], "b": []}, 60.0, 60.0, 600, 100
    )
    assert top == 10.0
    assert lines[0].points == "0.0,100.0 300.0,50.0 600.0,0.0"
    assert lines[1].points == "" and lines[1].latest == 0.0
