"""The workflow SIGKILL run (issue 12): chains and chords across worker processes that are
SIGKILLed every few seconds, checked from a ledger kept outside Redis.

``python -m tests.workflows_kill`` (``make workflows-chaos``): 2,000 chains of 4 steps over
two stage queues (extract and analyze share one, so their handoff rides in the ack;
summarize is forwarded to the other, then embed shares it again) and 50 chords of 100
members, on 3 worker processes, one SIGKILLed every 2-5 s and replaced. It checks that:

- every chain ends with its expected result, and every chord's callback ran with its 100
  results in member order;
- no step ran its side effect more than once beyond the runs of killed processes (a killed
  worker may have finished a job whose ack it never sent, so the job runs again);
- no job was added twice: every deterministic job id has exactly one entry in the streams;
- nothing was dead-lettered.

A private redis-server on loopback; the run stops itself after ``--timeout`` seconds. The
default suite runs a small version (tests/test_workflows_kill.py).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from conveyor import Conveyor, chain, chord
from conveyor.keys import LEVELS
from conveyor.workflows import ChainHandle, ChordHandle
from tests import workflow_tasks as t
from tests.chaos.harness import WorkerProc
from tests.redis_servers import RedisServer

NAMESPACE = "wfkill"


@dataclass
class Report:
    chains: int
    chords: int
    members: int
    seconds: float = 0.0
    kills: int = 0
    problems: list[str] = field(default_factory=list)
    extra_runs: int = 0  # runs beyond the first, all by killed processes
    entries: int = 0

    def line(self) -> str:
        verdict = "PASS" if not self.problems else f"FAIL ({len(self.problems)} problems)"
        return (
            f"{verdict}: {self.chains} chains x 4 steps, {self.chords} chords x {self.members} "
            f"members, {self.kills} SIGKILLs, {self.seconds:.1f} s; {self.entries} stream "
            f"entries, one per job id; {self.extra_runs} repeated runs, all by killed workers"
        )


class Fleet:
    def __init__(self, url: str, ledger: Path, logs: Path, lease: float, concurrency: int):
        self.url, self.ledger, self.logs = url, ledger, logs
        self.lease, self.concurrency = lease, concurrency
        self.procs: list[WorkerProc] = []
        self.killed: set[int] = set()

    def spawn(self) -> WorkerProc:
        cmd = [sys.executable, "-m", "tests.workflow_tasks", "--url", self.url]
        cmd += ["--namespace", NAMESPACE, "--lease", str(self.lease)]
        cmd += ["--concurrency", str(self.concurrency)]
        log = self.logs / f"worker-{len(self.procs):03d}.log"
        p = WorkerProc(len(self.procs), cmd, log, {"WF_LEDGER": str(self.ledger)})
        self.procs.append(p)
        return p

    def alive(self) -> list[WorkerProc]:
        return [p for p in self.procs if p.alive()]

    def keep(self, n: int) -> None:
        for _ in range(n - len(self.alive())):
            self.spawn()

    def kill_one(self, rng: random.Random) -> None:
        ready = [p for p in self.alive() if p.ready()]
        if ready:
            victim = rng.choice(ready)
            self.killed.add(victim.pid)
            victim.signal(9)
            victim.proc.wait()

    def close(self) -> None:
        for p in self.alive():
            p.signal(15)
        for p in self.procs:
            try:
                p.proc.wait(15)
            except Exception:
                p.signal(9)
                p.proc.wait()
            p.reap()


def read_ledger(path: Path) -> list[tuple[str, str, int]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        step, key, pid = line.split()
        out.append((step, key, int(pid)))
    return out


def enqueue_all(
    app: Conveyor, chains: int, chords: int, members: int
) -> tuple[list[ChainHandle[Any]], list[ChordHandle[Any]]]:
    a = [
        chain(t.extract.s(d), t.analyze.s(d), t.summarize.s(d), t.embed.s(d)).enqueue()
        for d in range(chains)
    ]
    b = [
        chord([t.member.s(c, i) for i in range(members)], t.merge.s(c, members)).enqueue()
        for c in range(chords)
    ]
    return a, b


def run(
    *,
    chains: int = 2000,
    chords: int = 50,
    members: int = 100,
    workers: int = 3,
    kill_every: tuple[float, float] = (2.0, 5.0),
    max_kills: int | None = None,
    lease: float = 2.0,
    concurrency: int = 4,
    seed: int = 12,
    timeout: float = 600.0,
    log: Any = print,
) -> Report:
    rng = random.Random(seed)
    report = Report(chains, chords, members)
    with tempfile.TemporaryDirectory(prefix="wfkill-") as tmp, RedisServer() as server:
        root = Path(tmp)
        ledger = root / "ledger"
        app = Conveyor(server.url, namespace=NAMESPACE)
        t.app.rebind(url=server.url, namespace=NAMESPACE)
        fleet = Fleet(server.url, ledger, root, lease, concurrency)
        try:
            started = time.monotonic()
            chain_handles, chord_handles = enqueue_all(t.app, chains, chords, members)
            took = time.monotonic() - started
            log(f"enqueued {chains} chains and {chords} chords in {took:.1f} s")
            fleet.keep(workers)
            next_kill = time.monotonic() + rng.uniform(*kill_every)
            deadline = started + timeout
            while True:
                runs = read_ledger(ledger)
                embedded = {k for s, k, _ in runs if s == "embed"}
                merged = {k.split("/")[0] for s, k, _ in runs if s == "merge"}
                if len(embedded) == chains and len(merged) == chords:
                    break
                if time.monotonic() > deadline:
                    report.problems.append(
                        f"timed out: {len(embedded)}/{chains} chains, {len(merged)}/{chords} chords"
                    )
                    break
                if time.monotonic() >= next_kill and (
                    max_kills is None or report.kills < max_kills
                ):
                    fleet.kill_one(rng)
                    report.kills += 1
                    next_kill = time.monotonic() + rng.uniform(*kill_every)
                    log(
                        f"kill {report.kills}: {len(embedded)}/{chains} chains, "
                        f"{len(merged)}/{chords} chords done"
                    )
                fleet.keep(workers)
                time.sleep(0.1)
            report.seconds = time.monotonic() - started
            # Let the last acks land before reading the final states.
            time.sleep(lease + 1.0)
        finally:
            fleet.close()
        check(app, server.url, chain_handles, chord_handles, read_ledger(ledger), fleet, report)
        app.close()
    return report


def check(
    app: Conveyor,
    url: str,
    chain_handles: list[ChainHandle[Any]],
    chord_handles: list[ChordHandle[Any]],
    runs: list[tuple[str, str, int]],
    fleet: Fleet,
    report: Report,
) -> None:
    problems = report.problems
    for doc, h in enumerate(chain_handles):
        try:
            got = h.result(timeout=5)
        except Exception as exc:
            problems.append(f"chain {doc}: {exc!r}")
            continue
        if got != t.expected_chain(doc):
            problems.append(f"chain {doc}: result {got}, expected {t.expected_chain(doc)}")
    for c, h in enumerate(chord_handles):
        try:
            if h.result(timeout=5) is not True:
                problems.append(f"chord {c}: callback saw results out of order or missing")
        except Exception as exc:
            problems.append(f"chord {c}: {exc!r}")
    # Side effects: beyond one run, every run must be by a process we SIGKILLed.
    by_key: dict[tuple[str, str], list[int]] = defaultdict(list)
    for step, key, pid in runs:
        by_key[(step, key)].append(pid)
    for (step, key), pids in by_key.items():
        survivors = [p for p in pids if p not in fleet.killed]
        report.extra_runs += len(pids) - 1
        if len(survivors) > 1 or len(pids) - 1 > len(pids) - len(survivors):
            killed = sorted(set(pids) & fleet.killed)
            problems.append(f"{step} {key} ran {len(pids)} times, by {pids} (killed: {killed})")
        if step == "merge" and key.endswith("/BAD"):
            problems.append(f"chord callback {key}: results not in member order")
    # No job added twice: one entry per deterministic id over every stream.
    r = redis.Redis.from_url(url)
    ids: Counter[bytes] = Counter()
    for q in (t.DOCS, t.TEXT, t.MERGE):
        for level in LEVELS:
            key = app.keys(q).stream(level)
            start = "-"
            while True:
                batch = r.xrange(key, start, "+", count=5000)
                if not batch:
                    break
                for _, fields in batch:
                    ids[fields.get(b"id", b"?")] += 1
                start = "(" + batch[-1][0].decode()
        if r.xlen(app.keys(q).dead):
            problems.append(f"{r.xlen(app.keys(q).dead)} dead letters on {q}")
    report.entries = sum(ids.values())
    twice = {k: n for k, n in ids.items() if n > 1}
    if twice:
        problems.append(f"{len(twice)} job ids with more than one entry, e.g. {list(twice)[:3]}")
    want = len(chain_handles) * 4 + len(chord_handles) * (report.members + 1)
    if len(ids) != want:
        problems.append(f"{len(ids)} distinct job ids in the streams, expected {want}")
    r.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--chains", type=int, default=2000)
    p.add_argument("--chords", type=int, default=50)
    p.add_argument("--members", type=int, default=100)
    p.add_argument("--workers", type=int, default=3)
    p.add_argument("--seed", type=int, default=12)
    p.add_argument("--timeout", type=float, default=600.0)
    args = p.parse_args(argv)
    report = run(
        chains=args.chains,
        chords=args.chords,
        members=args.members,
        workers=args.workers,
        seed=args.seed,
        timeout=args.timeout,
        log=lambda m: print(f"[workflows-kill {time.strftime('%H:%M:%S')}] {m}", flush=True),
    )
    for problem in report.problems[:30]:
        print("PROBLEM:", problem)
    print(report.line())
    return 0 if not report.problems else 1


if __name__ == "__main__":
    sys.exit(main())
