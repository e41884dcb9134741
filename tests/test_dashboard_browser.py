"""The dashboard in a real browser: headless Debian chromium (Playwright), a real worker on a
real Redis. Screenshots go to the test's tmp dir; CONVEYOR_DOCS_SCREENSHOT=path writes the
overview's to that path too (docs/images/dashboard.png was made so), and
CONVEYOR_DOCS_EVENTS_SCREENSHOT=path the Events page's (docs/images/dashboard-events.png).

Chromium missing fails these tests (see tests/dashboard_server.py): `make test` installs it.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from conveyor import Conveyor
from conveyor.dashboard import TokenAuth, asgi
from conveyor.testing import result
from tests.conftest import fast, wait_until, worker_thread
from tests.dashboard_server import CHROMIUM_ARGS, chromium_path, serve

#: How long a page may take to show what the test waits for (htmx polls every 2 s).
SEEN = 15_000
expect.set_options(timeout=SEEN)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    p = context.new_page()
    p.set_default_timeout(SEEN)
    yield p
    context.close()


def register(app: Conveyor, allowed: threading.Event) -> dict[str, Any]:
    @app.task
    async def resize(n: int) -> int:
        import asyncio

        await asyncio.sleep(0.05)
        return n

    @app.task(retries=0)
    def charge(order: str) -> str:
        if not allowed.is_set():
            raise ConnectionError(f"payment gateway down while charging {order}")
        return f"charged {order}"

    return {"resize": resize, "charge": charge}


def cell(page: Page, queue: str, column: str) -> Any:
    return page.locator(f'#queues tr[data-queue="{queue}"] td[data-col="{column}"]')


def test_overview_counts_change_as_jobs_run(app: Conveyor, page: Page, tmp_path: Path) -> None:
    tasks = register(app, threading.Event())
    jobs = [tasks["resize"].enqueue(n) for n in range(40)]
    with serve(asgi(app)) as url:
        page.goto(url + "/")
        expect(cell(page, "default", "ready")).to_have_text("40")
        expect(cell(page, "default", "done")).to_have_text("0")
        page.screenshot(path=str(tmp_path / "overview-before.png"), full_page=True)
        with worker_thread(app, fast(concurrency=2)):
            # Polled, not reloaded: the table changes in place while the worker drains.
            expect(cell(page, "default", "done")).not_to_have_text("0")
            expect(cell(page, "default", "ready")).to_have_text("0")
            expect(cell(page, "default", "done")).to_have_text("40")
            expect(cell(page, "default", "workers")).to_have_text("1")
            assert [result(j) for j in jobs] == list(range(40))
            # The polls sampled the drain: the throughput chart has a line above zero.
            throughput = page.locator("figure.chart").first
            expect(throughput.locator("polyline")).to_have_attribute(
                "points", re.compile(r"\S+ \S+")
            )
            expect(throughput.locator("figcaption")).not_to_contain_text("max 0.0 jobs/s")
            page.screenshot(path=str(tmp_path / "overview-after.png"), full_page=True)
            docs = os.environ.get("CONVEYOR_DOCS_SCREENSHOT")
            if docs:
                page.screenshot(path=docs)
            page.click("text=Workers")
            expect(page.locator("#workers tbody tr")).to_have_count(1)
            expect(page.locator("#workers tbody tr td").nth(1)).to_have_text("default")


def test_failed_job_page_shows_its_traceback(app: Conveyor, page: Page, tmp_path: Path) -> None:
    tasks = register(app, threading.Event())
    job = tasks["charge"].enqueue("order-17")
    with worker_thread(app, fast()):
        wait_until(lambda: job.status().value == "dead", 15, "the charge to fail for good")
    with serve(asgi(app)) as url:
        page.goto(url + "/jobs?state=dead")
        page.click(f"#history a:text-is('{job.id}')")
        expect(page.locator("#job-state")).to_have_text("dead")
        tb = page.locator("#traceback")
        expect(tb).to_contain_text("Traceback (most recent call last)")
        expect(tb).to_contain_text("ConnectionError: payment gateway down while charging order-17")
        expect(page.locator("#args")).to_contain_text("order-17")
        expect(page.locator("#attempts tbody tr")).to_have_count(1)
        page.screenshot(path=str(tmp_path / "failed-job.png"), full_page=True)


def test_replaying_a_dead_job_by_clicking_makes_it_succeed(
    app: Conveyor, page: Page, tmp_path: Path
) -> None:
    allowed = threading.Event()
    tasks = register(app, allowed)
    job = tasks["charge"].enqueue("order-18")
    with worker_thread(app, fast()):
        wait_until(lambda: job.status().value == "dead", 15, "the charge to fail for good")
        allowed.set()  # the gateway is back
        with serve(asgi(app)) as url:
            page.goto(url + "/dead")
            row = page.locator("#dead tbody tr").filter(has_text=job.id)
            expect(row).to_contain_text("failed")
            page.screenshot(path=str(tmp_path / "dead-letters.png"), full_page=True)
            row.get_by_role("button", name="Replay").click()
            expect(page.locator("#notice")).to_have_text("replayed 1")
            expect(page.locator("#dead tbody")).not_to_contain_text(job.id)
            assert result(job) == "charged order-18"
            page.goto(url + f"/jobs/{job.id}")
            expect(page.locator("#job-state")).to_have_text("done")
            expect(page.locator("#result")).to_contain_text("charged order-18")
            page.screenshot(path=str(tmp_path / "replayed-job.png"), full_page=True)


def test_action_without_csrf_token_is_refused_in_the_browser(app: Conveyor, page: Page) -> None:
    tasks = register(app, threading.Event())
    job = tasks["charge"].enqueue("order-19")
    with worker_thread(app, fast()):
        wait_until(lambda: job.status().value == "dead", 15, "the charge to fail for good")
    with serve(asgi(app)) as url:
        page.goto(url + "/dead")
        row = page.locator("#dead tbody tr").filter(has_text=job.id)
        # What a forged form looks like: the same action, without the page's token.
        form = row.locator("form[action$='/dead/delete']")
        form.locator("input[name=csrf_token]").evaluate("el => el.remove()")
        row.get_by_role("button", name="Delete").click()
        expect(page.locator("h1")).to_have_text("Error 403")
        expect(page.locator("#message")).to_contain_text("CSRF token missing or wrong")
    assert app.broker.client.xlen(app.keys("default").dead) == 1


def test_with_auth_on_a_browser_gets_401_then_logs_in(app: Conveyor, page: Page) -> None:
    token = "browser-token-0123456789"
    with serve(asgi(app, auth=TokenAuth(token))) as url:
        response = page.goto(url + "/")
        assert response is not None and response.status == 401
        page.fill("input[name=token]", "wrong-token-0123456789")
        page.click("button:text-is('Log in')")
        expect(page.locator(".error")).to_have_text("wrong token")
        page.fill("input[name=token]", token)
        page.click("button:text-is('Log in')")
        expect(page.locator("h1")).to_have_text("Queues")


def test_job_id_with_html_is_shown_as_text(app: Conveyor, page: Page) -> None:
    evil = "<img src=x onerror=\"document.title='pwned'\">"
    app.broker.client.xadd(
        app.keys("default").stream("normal"),
        {"version": 1, "task": "t", "args": "[]", "kwargs": "{}", "id": evil},
    )
    with serve(asgi(app)) as url:
        page.goto(url + "/jobs")
        expect(page.locator("#history tbody")).to_contain_text(evil)
        page.fill("input[name=id]", evil)
        page.click("button:text-is('Open')")
        expect(page.locator("#message")).to_contain_text("not a Conveyor job id: '<img src=x")
        assert page.locator("main img").count() == 0
        assert page.title() != "pwned"


def test_delete_all_that_match_asks_first(app: Conveyor, page: Page) -> None:
    tasks = register(app, threading.Event())
    jobs = [tasks["charge"].enqueue(f"order-{n}") for n in (20, 21)]
    with worker_thread(app, fast()):
        wait_until(
            lambda: all(j.status().value == "dead" for j in jobs), 15, "both charges to fail"
        )
    dead = app.keys("default").dead
    with serve(asgi(app)) as url:
        page.goto(url + "/dead?task=charge")
        answers = iter([False, True])

        def answer(dialog: Any) -> None:
            assert "Delete every dead job of default of task charge?" in dialog.message
            dialog.accept() if next(answers) else dialog.dismiss()

        page.on("dialog", answer)
        page.click("#delete-all button")
        page.wait_for_timeout(300)
        assert app.broker.client.xlen(dead) == 2  # dismissed: nothing sent
        page.click("#delete-all button")
        expect(page.locator("#notice")).to_have_text("deleted 2")
    assert app.broker.client.xlen(dead) == 0


def test_events_view_shows_a_jobs_events_live_as_a_worker_runs_it(
    redis_url: str, namespace: str, page: Page, tmp_path: Path
) -> None:
    app = Conveyor(redis_url, namespace=namespace, events=True)
    try:
        tasks = register(app, threading.Event())
        with serve(asgi(app)) as url:
            page.goto(url + "/events")
            events = page.locator("#events")
            expect(events).to_contain_text("No events yet.")
            with worker_thread(app, fast()):
                # Enqueued after the page loaded: what follows comes by polling, no reload.
                ok, lost = tasks["resize"].enqueue(5), tasks["charge"].enqueue("order-30")

                def rows(job_id: str, kind: str) -> Any:
                    return events.locator(f"tbody tr[data-kind={kind}]").filter(has_text=job_id)

                for kind in ("started", "succeeded"):
                    expect(rows(ok.id, kind)).to_have_count(1)
                for kind in ("started", "failed", "dead"):
                    expect(rows(lost.id, kind)).to_have_count(1)
                expect(rows(lost.id, "dead")).to_contain_text("failed")  # its reason
                page.screenshot(path=str(tmp_path / "events.png"), full_page=True)
                docs = os.environ.get("CONVEYOR_DOCS_EVENTS_SCREENSHOT")
                if docs:
                    page.screenshot(path=docs, clip={"x": 0, "y": 0, "width": 1280, "height": 390})
                page.select_option("select[name=kind]", "dead")
                page.click("#filter button")
                expect(events.locator("tbody tr")).to_have_count(1)
                page.goto(url + "/")
                recent = page.locator("section.live").filter(has_text="Recent events")
                expect(
                    recent.locator(f"tr[data-kind=succeeded] a:text-is('{ok.id}')")
                ).to_have_count(1)
                recent.locator(f"tr[data-kind=dead] a:text-is('{lost.id}')").click()
                expect(page.locator("#job-state")).to_have_text("dead")
    finally:
        app.close()


def test_events_off_the_browser_is_told_how_to_turn_them_on(app: Conveyor, page: Page) -> None:
    with serve(asgi(app)) as url:
        page.goto(url + "/")
        expect(page.locator("section.live #events-off")).to_contain_text(
            "Conveyor(..., events=True)"
        )
        page.click("header nav a:text-is('Events')")
        expect(page.locator("#events-off")).to_contain_text("The events stream is off")
