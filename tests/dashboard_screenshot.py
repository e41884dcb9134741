"""Make the README's dashboard screenshot: ``python -m tests.dashboard_screenshot PATH``.

A real worker drains a steady mixed load on three queues (some jobs fail for good, some are
delayed) for ``--seconds`` while headless chromium watches the overview; then the overview is
saved to PATH. Loopback only, its own namespace (deleted at the end), about 45 s.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import threading
import time

from playwright.sync_api import sync_playwright

from conveyor import Conveyor
from conveyor.dashboard import asgi
from conveyor.testing import delete_namespace, worker_thread
from tests.conftest import fast
from tests.dashboard_server import CHROMIUM_ARGS, chromium_path, serve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("path")
    parser.add_argument("--seconds", type=float, default=40.0)
    args = parser.parse_args()
    app = Conveyor(namespace="dashboard-screenshot", events=True)

    @app.task(queue="images")
    async def resize(n: int) -> int:
        await asyncio.sleep(random.uniform(0.02, 0.12))
        return n

    @app.task(queue="emails", retries=0)
    async def send_receipt(order: str) -> None:
        await asyncio.sleep(0.03)
        if random.random() < 0.05:
            raise ConnectionError(f"SMTP refused the receipt for {order}")

    @app.task
    def report(day: int) -> str:
        return f"report {day}"

    stop = threading.Event()

    def produce() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            resize.enqueue(n)
            if n % 2:
                send_receipt.enqueue(f"order-{n}")
            if n % 10 == 0:
                report.enqueue_in(600, n)
            # Bursts now and then, so the wait chart has something to show.
            time.sleep(0.002 if (n // 200) % 3 == 2 else 0.03)

    producer = threading.Thread(target=produce, daemon=True)
    try:
        with serve(asgi(app)) as url, sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 560})
            page.goto(url + "/")
            with worker_thread(app, fast(concurrency=8)):
                producer.start()
                time.sleep(args.seconds)
                page.reload()
                page.wait_for_timeout(500)
                page.screenshot(path=args.path)
                stop.set()
                producer.join()
            browser.close()
    finally:
        delete_namespace(app)
        app.close()
    print(f"wrote {args.path}")


if __name__ == "__main__":
    main()
