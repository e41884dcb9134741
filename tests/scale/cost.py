"""``python -m tests.scale.cost``: Redis commands and client CPU per job, Cluster vs standalone,
side by side in one run.

The same workload on a private standalone redis-server and on a 3-master Cluster: ``--jobs``
jobs over 16 queues, enqueued with ``enqueue_many`` (batches of 500) and drained by one
in-process worker. Commands are INFO commandstats deltas summed over every master; CPU is
this process' (producer and worker) ``process_time``. Both servers run on this machine, so
the CPU numbers compare the client paths, not the network.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import redis

from conveyor import Conveyor, WorkerSettings
from conveyor.testing import worker_thread
from tests.redis_cluster import Cluster
from tests.redis_servers import RedisServer

QUEUES = tuple(f"q{i}" for i in range(16))


def commands(ports: list[int]) -> dict[str, int]:
    total: dict[str, int] = {}
    for port in ports:
        stats = redis.Redis("127.0.0.1", port).info("commandstats")
        for name, value in stats.items():
            total[name] = total.get(name, 0) + int(value["calls"])
    return total


def per_port(ports: list[int]) -> dict[int, int]:
    return {p: sum(commands([p]).values()) for p in ports}


def measure(url: str, ports: list[int], jobs: int) -> dict[str, Any]:
    app = Conveyor(url, namespace=f"cost-{int(time.time())}")

    @app.task
    async def noop(i: int) -> int:
        return i

    before = commands(ports)
    shard_before = per_port(ports)
    cpu0, t0 = time.process_time(), time.monotonic()
    handles = app.enqueue_many(
        [noop.using(queue=QUEUES[i % len(QUEUES)]).s(i) for i in range(jobs)]
    )
    cpu_enq, t_enq = time.process_time() - cpu0, time.monotonic() - t0
    settings = WorkerSettings(queues=QUEUES, concurrency=64, block_ms=200)
    with worker_thread(app, settings) as w:
        while w.counts.get("done", 0) < jobs:
            time.sleep(0.05)
    cpu, wall = time.process_time() - cpu0, time.monotonic() - t0
    after = commands(ports)
    shards = {p: n - shard_before[p] for p, n in per_port(ports).items()}
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    delta = {k.removeprefix("cmdstat_"): v for k, v in delta.items() if v > 0}
    ok = handles[-1].result(timeout=30) == jobs - 1
    app.close()
    return {
        "jobs": jobs,
        "ok": ok,
        "commands_per_job": round(sum(delta.values()) / jobs, 3),
        "by_command_per_job": {k: round(v / jobs, 3) for k, v in sorted(delta.items())},
        "enqueue_cpu_us_per_job": round(cpu_enq / jobs * 1e6, 1),
        "enqueue_wall_s": round(t_enq, 2),
        "total_cpu_us_per_job": round(cpu / jobs * 1e6, 1),
        "total_wall_s": round(wall, 2),
        "commands_per_shard": shards,
        "shard_max_over_min": round(max(shards.values()) / max(1, min(shards.values())), 2),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.scale.cost", description=__doc__)
    p.add_argument("--jobs", type=int, default=20_000)
    args = p.parse_args(argv)
    with RedisServer() as standalone:
        alone = measure(standalone.url, [standalone.port], args.jobs)
    with Cluster() as c:
        ports = [n.port for n in c.masters()]
        clustered = measure(c.url, ports, args.jobs)
    print(json.dumps({"standalone": alone, "cluster": clustered}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
