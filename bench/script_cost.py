"""Redis' own cost per job of the two batch scripts, each beside the plain commands it stands for.

On a private redis-server (loopback), measured by INFO commandstats (usec of EVALSHA, or of
the plain commands) and INFO cpu (the server's user + sys CPU):

- ``complete``: N jobs delivered to one consumer, then acked by complete.lua in batches of
  ``--batch`` (in entry order, with ``--running`` other entries of the consumer still pending
  among them, as a worker's slots leave them), against the floor's pipeline of SET PX per job
  and one XACK per batch.
- ``enqueue``: N jobs added by enqueue_many.lua in batches of 500, against pipelined XADDs.

    .venv/bin/python bench/script_cost.py --jobs 20000 --batch 50 --running 10
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from pathlib import Path
from typing import Any

import redis

from conveyor import scripts
from conveyor.broker import Broker, enqueue_calls, operations
from conveyor.keys import GROUP, QueueKeys

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.redis_servers
from tests.redis_servers import RedisServer

RECORD = b'{"state":"done","result":null,"ended":1764547200000}' + b" " * 40


def cost(client: redis.Redis, jobs: int, commands: tuple[str, ...], run: Any) -> dict[str, float]:
    """Redis usec (commandstats) and CPU usec per job of ``run()``."""
    client.config_resetstat()
    cpu0 = _cpu(client)
    run()
    cpu = _cpu(client) - cpu0
    stats = client.info("commandstats")
    usec = {k.removeprefix("cmdstat_"): int(v["usec"]) for k, v in stats.items()}
    return {
        "usec_per_job": round(sum(usec.get(c, 0) for c in commands) / jobs, 2),
        "cpu_us_per_job": round(cpu / jobs * 1e6, 2),
        "by_command": {k: round(v / jobs, 2) for k, v in usec.items() if v >= jobs / 100},
    }


def _cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _deliver(client: redis.Redis, stream: str, jobs: int) -> list[str]:
    client.delete(stream)
    pipe = client.pipeline(transaction=False)
    for i in range(jobs):
        pipe.xadd(stream, {"t": "noop", "a": f"[{i}]"})
    ids = [i.decode() for i in pipe.execute()]
    client.xgroup_create(stream, GROUP, id="0")
    client.xreadgroup(GROUP, "c", {stream: ">"}, count=jobs)
    return ids


def _batches(ids: list[str], batch: int, running: int) -> list[list[str]]:
    """Batches in the order jobs end when ``running`` of them run at once: each ends up to
    ``running`` places from its turn, so a batch's id range holds others still pending."""
    rng = random.Random(9)
    ended = sorted(range(len(ids)), key=lambda i: i + rng.uniform(0, running))
    return [[ids[i] for i in ended[s : s + batch]] for s in range(0, len(ids), batch)]


def complete(
    broker: Broker,
    client: redis.Redis,
    jobs: int,
    batch: int,
    running: int,
    variant: Path | None,
    reps: int,
) -> Any:
    keys = QueueKeys("bench", "default")
    stream = keys.stream("normal")

    def script(sha: str | None) -> Any:
        def run() -> None:
            for part in _batches(ids, batch, running):
                done = [operations.Completion("normal", e, f"j{e}", RECORD, 60_000) for e in part]
                call = operations.complete(keys, "c", done)
                if sha is None:
                    rejected = broker.call(call)
                else:
                    rejected = client.execute_command("EVALSHA", sha, *call.command[2:])
                assert not rejected, rejected

        return run

    def floor() -> None:
        for part in _batches(ids, batch, running):
            pipe = client.pipeline(transaction=False)
            for e in part:
                pipe.set(keys.record(f"j{e}"), RECORD, px=60_000)
            pipe.xack(stream, GROUP, *part)
            pipe.execute()

    broker.call(operations.complete(keys, "c", []))  # load the script
    runs: list[tuple[str, Any, tuple[str, ...]]] = [
        ("complete.lua", script(None), ("evalsha",)),  # inner commands included
        ("SET + XACK", floor, ("set", "xack")),
    ]
    if variant is not None:
        source = scripts._expand(variant.read_text())
        flags = next(x for x in source.splitlines() if x.startswith("-- @flags"))
        shebang = "#!lua flags=" + flags.removeprefix("-- @flags").strip()
        sha = client.script_load(f"{shebang.rstrip('=')}\n{source}")
        runs.insert(1, (f"variant {variant.name}", script(sha), ("evalsha",)))
    results: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in runs}
    for _ in range(reps):
        for name, run, commands in runs:
            ids = _deliver(client, stream, jobs)
            results[name].append(cost(client, jobs, commands, run))
            assert client.xpending(stream, GROUP)["pending"] == 0
    return {
        name: {
            "cpu_us_per_job": statistics.median(r["cpu_us_per_job"] for r in rs),
            "usec_per_job": statistics.median(r["usec_per_job"] for r in rs),
            "runs": [r["cpu_us_per_job"] for r in rs],
        }
        for name, rs in results.items()
    }


def enqueue(broker: Broker, client: redis.Redis, jobs: int, payload: int) -> Any:
    keys = QueueKeys("bench", "default")
    stream = keys.stream("normal")
    kw = '{"prompt":"' + "a" * payload + '"}' if payload else "{}"
    fields = [{"t": "noop", "a": f"[{i}]", "k": kw} for i in range(jobs)]

    def script() -> None:
        for start in range(0, jobs, 500):
            broker.call(enqueue_calls.enqueue_many(keys, "normal", fields[start : start + 500]))

    def floor() -> None:
        for start in range(0, jobs, 500):
            pipe = client.pipeline(transaction=False)
            for f in fields[start : start + 500]:
                pipe.xadd(stream, f)
            pipe.execute()

    results = {}
    for name, run, commands in (
        ("enqueue_many", script, ("evalsha",)),  # its time includes its XADDs
        ("pipelined XADD", floor, ("xadd",)),
    ):
        client.delete(stream)
        results[name] = cost(client, jobs, commands, run)
        assert client.xlen(stream) == jobs
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--running", type=int, default=10)
    parser.add_argument("--payload", type=int, default=0, help="bytes of kwargs per enqueued job")
    parser.add_argument("--reps", type=int, default=1, help="alternated runs; medians")
    parser.add_argument("--variant", type=Path, help="another complete.lua to run beside it")
    args = parser.parse_args()
    with RedisServer() as server:
        client = redis.Redis.from_url(server.url)
        broker = Broker(server.url)
        report = {
            "complete": complete(
                broker, client, args.jobs, args.batch, args.running, args.variant, args.reps
            ),
            "enqueue": enqueue(broker, client, args.jobs, args.payload),
        }
        print(json.dumps(report, indent=2))
        broker.close()
        client.close()


if __name__ == "__main__":
    main()
