"""What hooks, metrics, traces and events cost the worker: drain rate and Redis commands per
job with each of them on, against all off, side by side in one run.

A private redis-server on a free loopback port; for each round, every mode in turn (so
drift and noise of a shared machine fall on all of them alike): N no-op jobs enqueued in
bulk (not timed), then drained by one in-process worker; the drain is timed to the last
ack. Prints the median drain rate of each mode, its ratio to ``off``, the worker process's
CPU time per job (less sensitive than the rate to other load on a shared machine), and the
Redis commands per job during the drain (INFO commandstats, Lua included).

    .venv/bin/python bench/telemetry_cost.py --jobs 20000 --rounds 5
    .venv/bin/python bench/telemetry_cost.py --modes off   # runs on a tree without them too
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import redis

from conveyor import Conveyor, WorkerSettings
from conveyor.worker import Worker

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.redis_servers
from tests.redis_servers import RedisServer

MODES = ("off", "hook", "metrics", "events", "tracing", "all")


def commandstats(client: redis.Redis) -> dict[str, int]:
    info = client.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in info.items()}


def make_app(url: str, mode: str, n: int) -> Conveyor:
    events = mode in ("events", "all")
    app = Conveyor(url, namespace=f"cost-{mode}-{n}", **({"events": True} if events else {}))

    @app.task
    async def noop(x: int) -> None:
        return None

    if mode in ("hook", "all"):
        app.on("succeeded")(lambda event: None)
    if mode in ("metrics", "all"):
        from conveyor import metrics

        metrics.instrument(app)
    if mode in ("tracing", "all"):
        from opentelemetry.sdk.trace import TracerProvider

        from conveyor import tracing

        tracing.instrument(app, TracerProvider())  # spans recorded, then dropped
    return app


async def drain(app: Conveyor, jobs: int, concurrency: int) -> tuple[float, float]:
    """Wall seconds and this process's CPU seconds (all threads) to drain ``jobs``."""
    worker = Worker(app, WorkerSettings(concurrency=concurrency))
    run = asyncio.create_task(worker.run())
    await worker.ready.wait()  # timed from the first fetch, not the worker's start-up
    started, cpu = time.perf_counter(), time.process_time()
    while worker.counts["done"] < jobs:
        await asyncio.sleep(0.002)
        if run.done():
            run.result()
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    worker.stop()
    await run
    return elapsed, cpu


def measure(
    url: str, client: redis.Redis, mode: str, n: int, args: Any
) -> tuple[float, float, float]:
    app = make_app(url, mode, n)
    task = app.tasks["noop"]
    task.enqueue_many([(i,) for i in range(args.jobs)])
    before = commandstats(client)
    seconds, cpu = asyncio.run(drain(app, args.jobs, args.concurrency))
    after = commandstats(client)
    skip = ("info", "config|resetstat")
    commands = sum(v - before.get(k, 0) for k, v in after.items() if k not in skip)
    for key in client.scan_iter(match=f"{app.namespace}:*"):
        client.delete(key)
    app.close()
    return args.jobs / seconds, commands / args.jobs, cpu / args.jobs * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--modes", default=",".join(MODES))
    args = parser.parse_args()
    modes = args.modes.split(",")
    rates: dict[str, list[float]] = {m: [] for m in modes}
    cmds: dict[str, list[float]] = {m: [] for m in modes}
    cpus: dict[str, list[float]] = {m: [] for m in modes}
    with RedisServer() as server:
        client = redis.Redis.from_url(server.url)
        measure(server.url, client, "off", -1, argparse.Namespace(**{**vars(args), "jobs": 500}))
        for n in range(args.rounds):
            for mode in modes:
                rate, per_job, cpu = measure(server.url, client, mode, n, args)
                rates[mode].append(rate)
                cmds[mode].append(per_job)
                cpus[mode].append(cpu)
        version = client.info("server")["redis_version"]
        client.close()
    base = statistics.median(rates[modes[0]])
    report = {
        "redis": version,
        "jobs": args.jobs,
        "rounds": args.rounds,
        "concurrency": args.concurrency,
        "modes": {
            m: {
                "drain_per_s_median": round(statistics.median(rates[m])),
                "drain_per_s_all": [round(r) for r in rates[m]],
                "ratio_to_first": round(statistics.median(rates[m]) / base, 3),
                "redis_commands_per_job": round(statistics.median(cmds[m]), 3),
                "worker_cpu_us_per_job": round(statistics.median(cpus[m]), 1),
            }
            for m in modes
        },
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
