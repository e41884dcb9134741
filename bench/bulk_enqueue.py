"""Bulk enqueue, Conveyor's ``enqueue_many`` beside the floor's pipelined XADDs, in one session.

Alternates the two on a private redis-server (loopback) and prints the median jobs/s of each
and their ratio, so the machine's load disturbs both alike (issue 9: >= 0.8x the floor).

    .venv/bin/python bench/bulk_enqueue.py --jobs 20000 --reps 5 [--payload 2048]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import redis

from conveyor import Conveyor

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.redis_servers
from tests.redis_servers import RedisServer

#: the floor's pipeline size (bench/peers/floor_peer.py)
FLOOR_BATCH = 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--payload", type=int, default=0, help="bytes of JSON kwargs per job")
    args = parser.parse_args()
    kwargs = {"prompt": "a" * args.payload} if args.payload else {}
    with RedisServer() as server:
        client = redis.Redis.from_url(server.url)
        app = Conveyor(server.url, namespace="bulk")

        @app.task
        async def noop(x: int, prompt: str = "") -> None:
            return None

        noop.enqueue(0)  # connections and scripts warm
        rates: dict[str, list[float]] = {"conveyor": [], "floor": []}
        for _ in range(args.reps):
            calls = [noop.s(i, **kwargs) for i in range(args.jobs)]
            t0 = time.perf_counter()
            noop.enqueue_many(calls)
            rates["conveyor"].append(args.jobs / (time.perf_counter() - t0))
            t0 = time.perf_counter()
            for start in range(0, args.jobs, FLOOR_BATCH):
                pipe = client.pipeline(transaction=False)
                for i in range(start, min(args.jobs, start + FLOOR_BATCH)):
                    pipe.xadd("floor", {"task": "noop", "args": f"[{i}]", **kwargs})
                pipe.execute()
            rates["floor"].append(args.jobs / (time.perf_counter() - t0))
            client.flushall()
            noop.enqueue(0)
        medians = {k: round(statistics.median(v)) for k, v in rates.items()}
        print(
            json.dumps(
                {
                    "jobs": args.jobs,
                    "payload": args.payload,
                    "runs": {k: [round(x) for x in v] for k, v in rates.items()},
                    "medians": medians,
                    "ratio": round(medians["conveyor"] / medians["floor"], 2),
                }
            )
        )
        client.close()
        app.close()


if __name__ == "__main__":
    main()
