"""Redis commands per job on the hot path (enqueue + fetch + ack + result), and jobs/s.

Runs against a private redis-server on a free loopback port (so INFO commandstats sees only
this run), enqueues N no-op jobs one at a time, drains them with one in-process worker, and
prints the per-command breakdown from INFO commandstats (commands run inside Lua included).

    .venv/bin/python bench/hot_path.py --jobs 10000 --concurrency 50
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import redis

from conveyor import Conveyor, WorkerSettings
from conveyor.worker import Worker

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.redis_servers
from tests.redis_servers import RedisServer


def commandstats(client: redis.Redis) -> dict[str, int]:
    info = client.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in info.items()}


def diff(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    out = {k: v - before.get(k, 0) for k, v in after.items()}
    return {k: v for k, v in out.items() if v > 0 and k not in ("info", "config|resetstat")}


async def drain(app: Conveyor, jobs: int, concurrency: int) -> float:
    worker = Worker(app, WorkerSettings(concurrency=concurrency))
    run = asyncio.create_task(worker.run())
    started = time.perf_counter()
    while worker.counts["done"] < jobs:
        await asyncio.sleep(0.01)
        if run.done():
            run.result()
    elapsed = time.perf_counter() - started
    worker.stop()
    await run
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args()
    with RedisServer() as server:
        client = redis.Redis.from_url(server.url)
        app = Conveyor(server.url, namespace="bench")

        @app.task
        async def noop(x: int) -> None:
            return None

        noop.enqueue(0)  # warm up connections and scripts, not counted
        asyncio.run(drain(app, 1, 1))
        client.config_resetstat()
        before = commandstats(client)
        t0 = time.perf_counter()
        for i in range(args.jobs):
            noop.enqueue(i)
        enqueue_s = time.perf_counter() - t0
        enq = diff(commandstats(client), before)
        mid = commandstats(client)
        drain_s = asyncio.run(drain(app, args.jobs, args.concurrency))
        proc = diff(commandstats(client), mid)
        total = sum(enq.values()) + sum(proc.values())
        report = {
            "redis": client.info("server")["redis_version"],
            "jobs": args.jobs,
            "concurrency": args.concurrency,
            "enqueue_per_s": round(args.jobs / enqueue_s),
            "drain_per_s": round(args.jobs / drain_s),
            "commands_per_job": round(total / args.jobs, 3),
            "enqueue_commands": enq,
            "process_commands": proc,
        }
        print(json.dumps(report, indent=2))
        client.close()
        app.close()


if __name__ == "__main__":
    main()
