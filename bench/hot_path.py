"""Conveyor alone, in-process: Redis commands, Redis CPU and worker CPU per job, and jobs/s.

Runs against a private redis-server on a free loopback port (so INFO sees only this run),
enqueues N no-op jobs (one at a time, or with ``--bulk`` through enqueue_many), drains them
with one in-process worker until the last ack is stored, and prints the per-command breakdown
from INFO commandstats (commands run inside Lua included), Redis' CPU (INFO cpu) and this
process's CPU (the worker's loop and its lease thread) per job, and the worker's ack lag.
With ``--reps`` the drain is repeated on fresh backlogs and the medians are printed too.

    .venv/bin/python bench/hot_path.py --jobs 10000 --concurrency 50
    .venv/bin/python bench/hot_path.py --jobs 20000 --concurrency 10 --bulk --reps 3
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


def commandstats(client: redis.Redis) -> dict[str, int]:
    info = client.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in info.items()}


def command_usec(client: redis.Redis) -> dict[str, int]:
    info = client.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["usec"]) for k, v in info.items()}


def redis_cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def diff(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    out = {k: v - before.get(k, 0) for k, v in after.items()}
    return {k: v for k, v in out.items() if v > 0 and k not in ("info", "config|resetstat")}


def acked(client: redis.Redis, stream: str) -> bool:
    """The group has read everything and nothing is pending: the last ack is stored."""
    groups = client.xinfo_groups(stream)
    return all(g["pending"] == 0 and g["lag"] == 0 for g in groups)


async def drain(
    app: Conveyor, jobs: int, concurrency: int, client: redis.Redis, stream: str
) -> tuple[float, float, dict[str, float]]:
    """Seconds to the last ack, this process's CPU seconds over them, and the ack lag."""
    worker = Worker(app, WorkerSettings(concurrency=concurrency))
    run = asyncio.create_task(worker.run())
    await worker.ready.wait()
    started, cpu0 = time.perf_counter(), time.process_time()
    while worker.counts["done"] < jobs:
        await asyncio.sleep(0.005)
        if run.done():
            run.result()
    for _ in range(10_000):  # a blocking call: only once the jobs are done
        if acked(client, stream):
            break
        await asyncio.sleep(0.001)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu0
    lag = worker.ack_lag.summary()
    worker.stop()
    await run
    return elapsed, cpu, lag


def per_job(usec: dict[str, int], jobs: int) -> dict[str, float]:
    """Redis microseconds per job by command (commands inside scripts listed too)."""
    return {k: round(v / jobs, 2) for k, v in usec.items() if v >= jobs / 100}


def enqueue(task: Any, jobs: int, bulk: bool, payload: int = 0) -> float:
    """Enqueue ``jobs`` calls of ``task``, with ``payload`` bytes of JSON kwargs each
    (the bench's prompt-sized payload) when asked; seconds taken."""
    prompt = {"prompt": "a" * payload} if payload else {}
    t0 = time.perf_counter()
    if bulk:
        for start in range(0, jobs, 1000):
            calls = [task.s(i, **prompt) for i in range(start, min(jobs, start + 1000))]
            task.enqueue_many(calls)
    else:
        for i in range(jobs):
            task.enqueue(i, **prompt)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--bulk", action="store_true", help="enqueue with enqueue_many")
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--payload", type=int, default=0, help="bytes of JSON kwargs per job")
    args = parser.parse_args()
    with RedisServer() as server:
        client = redis.Redis.from_url(server.url)
        app = Conveyor(server.url, namespace="bench")

        @app.task
        async def noop(x: int, prompt: str = "") -> None:
            return None

        stream = app.keys(app.default_queue).stream("normal")
        noop.enqueue(0)  # warm up connections and scripts, not counted
        asyncio.run(drain(app, 1, 1, client, stream))
        runs = []
        for _ in range(args.reps):
            client.config_resetstat()
            before, cpu_start = commandstats(client), redis_cpu(client)
            enqueue_s = enqueue(noop, args.jobs, args.bulk, args.payload)
            enq = diff(commandstats(client), before)
            enqueue_usec = diff(command_usec(client), {})
            mid, cpu_before = commandstats(client), redis_cpu(client)
            drain_s, worker_cpu, lag = asyncio.run(
                drain(app, args.jobs, args.concurrency, client, stream)
            )
            redis_s = redis_cpu(client) - cpu_before
            proc = diff(commandstats(client), mid)
            usec = diff(command_usec(client), enqueue_usec)
            total = sum(enq.values()) + sum(proc.values())
            runs.append(
                {
                    "enqueue_per_s": round(args.jobs / enqueue_s),
                    "enqueue_redis_cpu_us_per_job": round(
                        (cpu_before - cpu_start) / args.jobs * 1e6, 1
                    ),
                    "drain_per_s": round(args.jobs / drain_s),
                    "worker_cpu_us_per_job": round(worker_cpu / args.jobs * 1e6, 1),
                    "redis_cpu_us_per_job": round(redis_s / args.jobs * 1e6, 1),
                    "ack_lag_p50_ms": lag["p50_ms"],
                    "ack_lag_p99_ms": lag["p99_ms"],
                    "commands_per_job": round(total / args.jobs, 3),
                    "enqueue_commands": enq,
                    "process_commands": proc,
                    "enqueue_redis_usec_per_job_by_command": per_job(enqueue_usec, args.jobs),
                    "drain_redis_usec_per_job_by_command": per_job(usec, args.jobs),
                }
            )
        report: dict[str, Any] = {
            "redis": client.info("server")["redis_version"],
            "jobs": args.jobs,
            "concurrency": args.concurrency,
            "bulk": args.bulk,
            "payload": args.payload,
            "runs": runs,
        }
        if args.reps > 1:
            report["medians"] = {
                k: statistics.median(r[k] for r in runs)
                for k in runs[0]
                if isinstance(runs[0][k], (int, float))
            }
        print(json.dumps(report, indent=2))
        client.close()
        app.close()


if __name__ == "__main__":
    main()
