"""``python -m tests.scale``: failover runs on a real Redis Cluster and Sentinel group.

Each run starts its topology (tests/redis_cluster.py), 3 worker processes, and a producer
enqueueing ``--jobs`` jobs over ``--queues`` queues in batches; when half the jobs are
enqueued it SIGKILLs a master (on Cluster, the one owning most of the queues), waits for the
replica's promotion, and goes on. Ledgers outside Redis (the producer's in memory, one file
per worker) give: jobs acknowledged by Redis, jobs run, lost (acknowledged, never ran),
duplicated (ran more than once), producer downtime and time to recover (kill to the first
job run again on the failed shard). ``--wait`` enqueues with Durability(1 replica): then
acknowledged enqueues lost must be 0. Bounded: every wait has a deadline; all processes
are stopped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from conveyor import ConveyorError
from conveyor.settings import Durability
from tests.redis_cluster import Cluster, SentinelGroup
from tests.scale.worker import QUEUES, make_app

ROOT = Path(__file__).resolve().parents[2]
BATCH = 100


class Run:
    def __init__(self, topology: str, jobs: int, queues: int, wait: bool, workers: int) -> None:
        self.topology = topology
        self.jobs = jobs
        self.queues = QUEUES[:queues]
        self.durability = Durability(1, 2.0) if wait else None
        self.workers = workers
        #: restart the killed master once its replica took over, so the shard has a
        #: replica again (without one, every WAIT 1 there times out: NotReplicated)
        self.restart = True
        self.dir = Path(tempfile.mkdtemp(prefix=f"conveyor-scale-{topology}-"))
        self.ok: dict[int, float] = {}  # seq -> when Redis acknowledged its enqueue
        self.failed: set[int] = set()
        self.unknown: set[int] = set()
        self.not_replicated: set[int] = set()
        self.errors: Counter[str] = Counter()
        self.kill_at: float | None = None
        self.producer_down: tuple[float, float] | None = None

    def ledger(self) -> list[tuple[int, int, float]]:
        out = []
        for path in self.dir.glob("worker-*.ledger"):
            for line in path.read_text().splitlines():
                parts = line.split()
                if len(parts) == 4 and parts[0] == "DONE":
                    out.append((int(parts[1]), int(parts[2]), float(parts[3])))
        return out

    def runs(self) -> Counter[int]:
        return Counter(seq for seq, _, _ in self.ledger())

    def log_lines(self, text: str) -> int:
        """Worker log lines containing ``text``: "lease lost" and "consumer group missing"
        show workers reaching a server without the queue's state (an empty old master)."""
        return sum(
            path.read_text(errors="replace").count(text) for path in self.dir.glob("worker-*.log")
        )


def produce(run: Run, url: str, namespace: str, kill: threading.Event) -> None:
    app = make_app(url, namespace)
    job = app.get_task("job")
    seq = 0
    first_fail: float | None = None
    last_fail: float | None = None
    while seq < run.jobs:
        seqs = list(range(seq, min(seq + BATCH, run.jobs)))
        sigs = [job.using(queue=run.queues[s % len(run.queues)]).s(s) for s in seqs]
        try:
            app.enqueue_many(sigs, durability=run.durability)
            now = time.monotonic()
            run.ok.update(dict.fromkeys(seqs, now))
            seq = seqs[-1] + 1
        except ConveyorError as exc:
            now = time.monotonic()
            first_fail = first_fail or now
            last_fail = now
            name = type(exc).__name__
            run.errors[name] += 1
            if name == "NotReplicated":
                # added on the master but not confirmed: counted apart, not resent
                run.not_replicated.update(seqs)
                seq = seqs[-1] + 1
            elif name == "EnqueueUncertain":
                run.unknown.update(seqs)
                seq = seqs[-1] + 1
            else:  # certainly not added (could not connect, refused): try the batch again
                time.sleep(0.2)
        if seq >= run.jobs // 2 and not kill.is_set():
            kill.set()
    if first_fail is not None and last_fail is not None:
        run.producer_down = (first_fail, last_fail)
    app.close()


def spawn_workers(run: Run, url: str, namespace: str) -> list[subprocess.Popen[bytes]]:
    procs = []
    for i in range(run.workers):
        log = open(run.dir / f"worker-{i}.log", "wb")  # noqa: SIM115 - the process owns it
        procs.append(
            subprocess.Popen(
                [
                    *(sys.executable, "-m", "tests.scale.worker"),
                    *(url, namespace, str(run.dir), str(len(run.queues))),
                ],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        )
    deadline = time.monotonic() + 30
    for i in range(run.workers):
        while b"READY" not in (run.dir / f"worker-{i}.log").read_bytes():
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker {i} did not start: see {run.dir}")
            time.sleep(0.1)
    return procs


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        with contextlib.suppress(ProcessLookupError):
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def execute(run: Run, timeout: float) -> dict[str, Any]:
    namespace = f"scale-{os.getpid()}"
    topo: Cluster | SentinelGroup
    topo = Cluster() if run.topology == "cluster" else SentinelGroup()
    t_start = time.monotonic()
    with topo:
        url = topo.url
        procs = spawn_workers(run, url, namespace)
        kill = threading.Event()
        producer = threading.Thread(target=produce, args=(run, url, namespace, kill), daemon=True)
        t0 = time.monotonic()
        producer.start()
        if not kill.wait(timeout):
            raise RuntimeError("the producer never reached half way")
        placement: dict[str, Any] = {}
        if isinstance(topo, Cluster):
            app = make_app(url, namespace)
            client = app.broker.client
            owners = Counter(
                client.get_node_from_key(app.keys(q).stream("normal")).port for q in run.queues
            )
            app.close()
            port = owners.most_common(1)[0][0]
            placement = {"queues_per_master_port": dict(owners)}
            victim = next(n for n in topo.nodes if n.port == port)
            failed_queues = {
                q for q in run.queues if q and owners and _owner(url, namespace, q) == port
            }
            run.kill_at = time.monotonic()
            topo.kill_master(victim)
            promoted_in = topo.wait_promoted(victim)
            if run.restart:
                victim.start()  # as an orchestrator would: it rejoins as a replica
                topo.wait_replicas_synced()
        else:
            old = topo.master_port()
            failed_queues = set(run.queues)
            run.kill_at = time.monotonic()
            killed = topo.kill_master()
            promoted_in = topo.wait_promoted(old)
            if run.restart:
                killed.start()
        producer.join(timeout)
        enqueued_at = time.monotonic()
        expected = set(run.ok) | run.not_replicated
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ran = set(run.runs())
            if expected <= ran:
                break
            time.sleep(0.5)
        drained_at = time.monotonic()
        time.sleep(2.0)  # late duplicates (reclaims) show up in the ledger too
        stop(procs)
    runs = run.runs()
    acked = set(run.ok)
    lost = sorted(acked - set(runs))
    dup = sum(n - 1 for n in runs.values() if n > 1)
    recover = _recovered(run, failed_queues)
    return {
        "topology": run.topology,
        "wait_replicas": 1 if run.durability else 0,
        "jobs": run.jobs,
        "queues": len(run.queues),
        "workers": run.workers,
        "enqueued_acknowledged": len(acked),
        "enqueued_not_replicated": len(run.not_replicated),
        "enqueued_unknown": len(run.unknown),
        "enqueue_errors": dict(run.errors),
        "ran_distinct": len(set(runs)),
        "lost_acknowledged": len(lost),
        "lost_sample": lost[:10],
        "duplicated_runs": dup,
        "lease_lost_lines": run.log_lines("lease lost"),
        "group_missing_lines": run.log_lines("consumer group missing"),
        "promotion_s": round(promoted_in, 2),
        "producer_downtime_s": (
            round(run.producer_down[1] - run.producer_down[0], 2) if run.producer_down else 0.0
        ),
        "recover_s": recover,
        "killed_master_restarted": run.restart,
        "producer_max_stall_s": _max_stall(run),
        "workers_max_gap_s": _max_gap(run),
        "enqueue_s": round(enqueued_at - t0, 2),
        "drain_s": round(drained_at - t0, 2),
        "total_s": round(time.monotonic() - t_start, 2),
        **placement,
        "dir": str(run.dir),
    }


def _max_stall(run: Run) -> float:
    """Longest gap between two acknowledged enqueue batches (the producer's outage)."""
    times = sorted(set(run.ok.values()))
    return round(max((b - a for a, b in itertools.pairwise(times)), default=0.0), 2)


def _max_gap(run: Run) -> float:
    """Longest time no worker finished any job while jobs were left (the workers' outage)."""
    times = sorted(at for _, _, at in run.ledger())
    return round(max((b - a for a, b in itertools.pairwise(times)), default=0.0), 2)


def _owner(url: str, namespace: str, queue: str) -> int:
    app = make_app(url, namespace)
    port = int(app.broker.client.get_node_from_key(app.keys(queue).stream("normal")).port)
    app.close()
    return port


def _recovered(run: Run, failed_queues: set[str]) -> float | None:
    """Seconds from the kill to the first run, after it, of a job on the failed shard that
    was enqueued after the kill (the shard serves producers and workers again)."""
    if run.kill_at is None:
        return None
    wall_kill = time.time() - (time.monotonic() - run.kill_at)
    after = {s for s, at in run.ok.items() if at > run.kill_at}
    firsts = [
        mtime
        for seq, _, mtime in run.ledger()
        if seq in after and run.queues[seq % len(run.queues)] in failed_queues
    ]
    return round(min(firsts) - wall_kill, 2) if firsts else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.scale", description=__doc__)
    p.add_argument("runs", nargs="*", default=["cluster", "cluster-wait", "sentinel"])
    p.add_argument("--jobs", type=int, default=20_000)
    p.add_argument("--queues", type=int, default=12)
    p.add_argument("--workers", type=int, default=3)
    p.add_argument("--timeout", type=float, default=180.0)
    p.add_argument(
        "--no-restart",
        action="store_true",
        help="leave the killed master down (the shard runs on without a replica)",
    )
    args = p.parse_args(argv)
    results = []
    for name in args.runs:
        topology, _, wait = name.partition("-")
        run = Run(topology, args.jobs, args.queues, wait == "wait", args.workers)
        run.restart = not args.no_restart
        result = execute(run, args.timeout)
        results.append(result)
        print(json.dumps(result), flush=True)
    bad = [r for r in results if r["wait_replicas"] and r["lost_acknowledged"]]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
