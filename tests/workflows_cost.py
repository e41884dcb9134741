"""What a workflow step costs in Redis commands, against a plain job (issue 12).

``python -m tests.workflows_cost [N]`` drains N plain jobs, N steps of 2-step chains on one
queue, N steps of 2-step chains across two queues and a chord of N members, each on a fresh
private redis-server, and counts what clients sent with MONITOR (commands a script runs are
reported as ``lua`` there and left out): EVALSHA by script name, and every other command.
Commands in one pipeline share a round trip, so the count is an upper bound of round trips.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import redis

from conveyor import Conveyor, WorkerSettings, chain, chord
from conveyor.scripts import all_scripts
from conveyor.testing import worker_thread
from tests.redis_servers import RedisServer

SCRIPT_NAMES = {}
for _s in all_scripts():
    SCRIPT_NAMES[_s.sha] = _s.name
    SCRIPT_NAMES[_s.flagged_sha] = _s.name


class Monitor:
    """Every command clients send to ``url`` (not those scripts run), by name."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.counts: Counter[str] = Counter()
        self._mon = self.client.monitor()
        self._mon.connection.send_command("MONITOR")
        self._mon.connection.read_response()
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                info = self._mon.next_command()
            except Exception:
                return
            if info.get("client_type") == "lua":
                continue
            words = info["command"].split()
            name = words[0].upper() if words else "?"
            if name == "EVALSHA" and len(words) > 1:
                name = "EVALSHA " + SCRIPT_NAMES.get(words[1], words[1][:8])
            self.counts[name] += 1

    def snapshot(self) -> Counter[str]:
        time.sleep(0.3)  # let MONITOR catch up
        return Counter(self.counts)

    def close(self) -> None:
        self._stop = True
        self.client.close()


def drain(
    jobs: int, setup: Callable[[Conveyor], Callable[[], Any]], done: Callable[[Any], None]
) -> tuple[Counter[str], Counter[str]]:
    """(commands to enqueue, commands the worker sent to run ``jobs`` jobs) for one scenario
    on a fresh server; ``done`` checks the results afterwards (not counted)."""
    with RedisServer() as server:
        app = Conveyor(server.url, namespace="cost")
        start = setup(app)
        mon = Monitor(server.url)
        try:
            handles = start()
            enq = mon.snapshot()
            settings = WorkerSettings(concurrency=10, block_ms=100, promote_every=1.0)
            with worker_thread(app, settings) as worker:
                deadline = time.monotonic() + 120
                while worker.counts.get("done", 0) < jobs and time.monotonic() < deadline:
                    time.sleep(0.01)
                total = mon.snapshot()
                done(handles)
        finally:
            mon.close()
            app.close()
    return enq, total - enq


def scenarios(n: int) -> dict[str, tuple[int, Callable[[Conveyor], Callable[[], Any]], Any]]:
    def tasks(app: Conveyor) -> tuple[Any, Any, Any]:
        @app.task
        def inc(x: int) -> int:
            return x + 1

        @app.task(queue="other")
        def inc2(x: int) -> int:
            return x + 1

        @app.task(queue="other")
        def total(xs: list[int]) -> int:
            return sum(xs)

        return inc, inc2, total

    def plain(app: Conveyor) -> Callable[[], Any]:
        inc, _, _ = tasks(app)
        return lambda: [inc.enqueue(i) for i in range(n)]

    def same(app: Conveyor) -> Callable[[], Any]:
        inc, _, _ = tasks(app)
        return lambda: [chain(inc.s(i), inc.s()).enqueue() for i in range(n // 2)]

    def cross(app: Conveyor) -> Callable[[], Any]:
        inc, inc2, _ = tasks(app)
        return lambda: [chain(inc.s(i), inc2.s()).enqueue() for i in range(n // 2)]

    def fan(app: Conveyor) -> Callable[[], Any]:
        inc, _, total = tasks(app)
        return lambda: [chord([inc.s(i) for i in range(n)], total.s()).enqueue()]

    return {
        "plain job": (n, plain, lambda hs: [h.result(timeout=60) for h in hs]),
        "chain step, same queue": (n, same, lambda hs: [h.result(timeout=60) for h in hs]),
        "chain step, other queue": (n, cross, lambda hs: [h.result(timeout=60) for h in hs]),
        "chord member (callback elsewhere)": (n + 1, fan, lambda hs: hs[0].result(timeout=60)),
    }


def measure(n: int = 2000) -> dict[str, tuple[int, Counter[str], Counter[str]]]:
    out = {}
    for name, (jobs, setup, done) in scenarios(n).items():
        enq, drained = drain(jobs, setup, done)
        out[name] = (jobs, enq, drained)
    return out


def main(argv: list[str]) -> int:
    n = int(argv[0]) if argv else 2000
    results = measure(n)
    for name, (jobs, enq, drained) in results.items():
        scripts = sum(v for k, v in drained.items() if k.startswith("EVALSHA"))
        print(f"\n{name}: {jobs} jobs")
        print(f"  enqueue: {sum(enq.values()) / jobs:.3f} commands/job  {dict(enq.most_common(4))}")
        print(
            f"  worker:  {sum(drained.values()) / jobs:.3f} commands/job, "
            f"{scripts / jobs:.3f} EVALSHA/job"
        )
        for cmd, count in drained.most_common(8):
            print(f"    {cmd:<28} {count / jobs:.3f}/job")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
