"""The chaos scenarios of issue 3, each a function ``(run, n, options) -> Result``.

Sizes: ``n`` is the number of jobs (1,000 for the smoke subset inside ``make test``; the
issue's full sizes under ``make chaos``). Negative controls are scenarios that are unsafe on
purpose; the checker must FAIL them.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import signal
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from conveyor.keys import GROUP
from conveyor.wire import encode_fields
from conveyor.worker.fetcher import most_held

from . import tasks
from .checker import Result, dead_by_seq, tally, trace_duplicates
from .harness import (
    Background,
    DeadEntry,
    DeadReader,
    Fleet,
    QueueState,
    Run,
    log,
    paced,
    queue_state,
    scenario_run,
)
from .ledger import (
    Enqueue,
    WorkerLedgers,
    count_dones,
    read_producer_ledger,
    read_worker_ledgers,
)
from .proxy import ChaosProxy

MiB = 1 << 20


@dataclass(frozen=True)
class Options:
    seed: int
    base: Path
    keep: bool = False
    full: bool = False


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    fn: Callable[[Run, Result, int, Options], None]
    smoke: int | None  # jobs in the smoke subset; None: not part of it
    full: int
    control: bool = False

    def run(self, options: Options, n: int | None = None) -> Result:
        size = n if n is not None else (self.full if options.full else (self.smoke or self.full))
        result = Result(self.key, self.title, control=self.control)
        t0 = time.monotonic()
        log(f"scenario {self.key} ({self.title}), {size} jobs, seed {options.seed}")
        with scenario_run(f"scenario-{self.key}", options.base, keep=options.keep) as run:
            result.directory = str(run.dir)
            try:
                self.fn(run, result, size, options)
            except Exception as exc:
                result.fail(f"harness error: {type(exc).__name__}: {exc}")
                raise
            finally:
                result.note(f"seed {options.seed}")
                result.seconds = time.monotonic() - t0
                run.passed = result.as_expected
                if run.passed and not options.keep:
                    result.directory = ""
        log(result.report())
        return result


# --------------------------------------------------------------------------- shared steps


def collect(
    run: Run,
) -> tuple[dict[int, Enqueue], WorkerLedgers, list[DeadEntry], QueueState | None]:
    """Ledgers, the dead-letter stream and the queue state, read after the drain."""
    enqueues = read_producer_ledger(run.ledger_dir)
    ledgers = read_worker_ledgers(run.ledger_dir)
    client = run.client()
    dead: list[DeadEntry] = []
    state: QueueState | None = None
    with contextlib.suppress(redis.RedisError):
        dead = DeadReader(client, run.keys).poll()
        state = queue_state(client, run.keys)
    return enqueues, ledgers, dead, state


def suicide_pids(run: Run) -> set[int]:
    """Pids that ran a chaos_suicide job (START line of a seq the producer made a killer)."""
    kinds = {}
    for p in run.producers:
        kinds.update(p.kind)
    ledgers = read_worker_ledgers(run.ledger_dir)
    return {s.pid for s in ledgers.all_starts() if kinds.get(s.seq) == "suicide"}


def check_exits(result: Result, fleet: Fleet, suicides: Collection[int] = ()) -> None:
    """No worker may crash: every exit is a harness SIGKILL, a suicide job, or a clean stop."""
    crashes = []
    for p in fleet.procs:
        rc = p.returncode
        if p.killed_at is not None:
            continue
        if p.termed_at is not None:
            if p.stopped_in_time is False:
                crashes.append(f"pid {p.pid} did not exit within its grace period after SIGTERM")
            elif rc != 0:
                crashes.append(f"pid {p.pid} exited with {rc} after SIGTERM")
            continue
        if rc == -9 and p.pid in suicides:
            continue
        crashes.append(f"pid {p.pid} exited with {rc} on its own (log {p.log_path})")
    errors = fleet.error_lines()
    if crashes:
        result.fail(f"{len(crashes)} worker crash(es): {'; '.join(crashes[:5])}")
    if errors:
        result.fail(f"{len(errors)} internal error line(s) in worker logs: {errors[:3]}")


def ok_seqs(run: Run, kinds: set[str] | None = None) -> set[int]:
    out = set()
    for p in run.producers:
        for seq, status in p.status.items():
            if status == "ok" and (kinds is None or p.kind.get(seq) in kinds):
                out.add(seq)
    return out


def kill_loop(
    run: Run,
    fleet: Fleet,
    rng: random.Random,
    *,
    keep: int,
    interval: tuple[float, float],
    until: Callable[[], bool],
    limit: float,
) -> int:
    """SIGKILL a random worker every interval seconds and start a replacement, until until()."""
    t0 = time.monotonic()
    kills = 0
    while not until():
        time.sleep(rng.uniform(*interval))
        if fleet.kill_random(rng) is not None:
            kills += 1
        fleet.keep(keep)
        if time.monotonic() - t0 > limit:
            raise RuntimeError(f"kill loop still running after {limit:.0f}s")
    return kills


# --------------------------------------------------------------------------- 1: SIGKILL workers

S1_LEASE = 3.0
S1_CONCURRENCY = 8


def s1_sigkill_workers(run: Run, result: Result, n: int, opt: Options) -> None:
    rng = random.Random(opt.seed)
    jobs = random.Random(opt.seed + 1)
    run.start_redis()
    fleet = run.fleet(concurrency=S1_CONCURRENCY, lease=S1_LEASE, grace=15)
    fleet.wait_ready(fleet.spawn(3))
    prod = run.producer()
    seconds = max(8.0, n / 250)
    batch = 20

    def produce() -> None:
        for _ in paced(seconds, (n + batch - 1) // batch):
            prod.enqueue_many([("chaos_job", (jobs.randint(10, 200),), "good")] * batch)

    producer = Background(produce, "producer")
    producer.start()

    def finished_enough() -> bool:
        return not producer.is_alive() and len(count_dones(run.ledger_dir)) >= 0.9 * n

    kills = kill_loop(
        run, fleet, rng, keep=3, interval=(0.5, 2.0), until=finished_enough, limit=seconds + 180
    )
    producer.join_or_raise(30)
    limit = S1_LEASE + 30
    waited, settled = run.drain(
        want_done=ok_seqs(run), want_dead=set(), timeout=limit + 30, tick=lambda: fleet.keep(3)
    )
    enqueues, ledgers, dead, state = collect(run)
    late = fleet.stop_all(grace=25)
    killed = {pid for _, pid in fleet.kills}
    # Issue 9's rule: a killed worker may run again what it held (slots + prefetch + one ack
    # batch); in practice a kill re-runs the few jobs whose acks had not landed (reported).
    tally(
        result, enqueues, ledgers, dead, state, allowed_duplicates=kills * most_held(S1_CONCURRENCY)
    )
    for problem in trace_duplicates(ledgers, killed):
        result.fail(f"duplicate not traced to a killed worker: {problem}")
    check_exits(result, fleet)
    if late:
        result.fail(f"{len(late)} worker(s) ignored SIGTERM")
    if not settled or waited > limit:
        result.fail(f"drain took {waited:.1f}s after the last kill (limit lease+30 = {limit:.0f}s)")
    result.note(
        f"{kills} SIGKILLs, {len(fleet.procs)} worker processes, drain {waited:.1f}s after the "
        f"last kill, {result.duplicates} duplicate DONE(s), all from killed pids"
    )


# --------------------------------------------------------------------------- 2: rolling SIGTERM

S2_GRACE = 10.0


def s2_rolling_sigterm(run: Run, result: Result, n: int, opt: Options) -> None:
    """Rolling restarts: SIGTERM one worker at a time while starting its replacement."""
    rng = random.Random(opt.seed)
    jobs = random.Random(opt.seed + 1)
    terms = 20 if opt.full else 5
    run.start_redis()
    fleet = run.fleet(concurrency=8, lease=3.0, grace=S2_GRACE)
    fleet.wait_ready(fleet.spawn(3))
    prod = run.producer()
    seconds = max(8.0, n / 250)
    batch = 20

    def produce() -> None:
        for _ in paced(seconds, (n + batch - 1) // batch):
            prod.enqueue_many([("chaos_job", (jobs.randint(10, 200),), "good")] * batch)

    producer = Background(produce, "producer")
    t0 = time.monotonic()
    producer.start()
    termed = []
    for k in range(terms):
        due = t0 + seconds * (k + 1) / (terms + 1)
        time.sleep(max(0.0, due - time.monotonic()))
        # Like a rolling deploy: the replacement is up (READY) before the next one stops.
        busy = [p for p in fleet.alive() if p.termed_at is None and p.ready()]
        if not busy:
            continue
        victim = rng.choice(busy)
        fleet.sigterm(victim)
        termed.append(victim)
        fleet.wait_ready(fleet.spawn(1))
    producer.join_or_raise(seconds + 60)
    waited, settled = run.drain(want_done=ok_seqs(run), want_dead=set(), timeout=60)
    enqueues, ledgers, dead, state = collect(run)
    fleet.stop_all(grace=S2_GRACE + 15)
    tally(result, enqueues, ledgers, dead, state, allowed_duplicates=0)
    check_exits(result, fleet)
    exit_times = []
    for p in termed:
        if p.exited_at is None or p.termed_at is None:
            result.fail(f"worker pid {p.pid} never exited after SIGTERM")
            continue
        took = p.exited_at - p.termed_at
        exit_times.append(took)
        if took > S2_GRACE:
            result.fail(f"worker pid {p.pid} took {took:.1f}s to exit (grace {S2_GRACE:.0f}s)")
        if p.returncode != 0:
            result.fail(f"worker pid {p.pid} exited with {p.returncode} after SIGTERM")
    if not settled:
        result.fail(f"not settled after {waited:.0f}s")
    reruns = sum(1 for v in ledgers.starts.values() if len(v) > 1)
    result.note(
        f"{len(termed)} rolling SIGTERMs, exits took {_spread(exit_times)} (grace "
        f"{S2_GRACE:.0f}s); {reruns} job(s) started twice (requeued unstarted or reclaimed)"
    )


def _spread(values: list[float]) -> str:
    if not values:
        return "n/a"
    return f"{min(values):.1f}-{max(values):.1f}s"


# --------------------------------------------------------------------------- 3: kill -9 Redis

S3_LEASE = 5.0
RECONNECT_LIMIT = 10.0


def redis_kill(
    run: Run,
    result: Result,
    n: int,
    opt: Options,
    *,
    kills: int,
    persistence: str,
    allowed_lost: int = 0,
) -> None:
    """Kill -9 the redis-server `kills` times while jobs flow, restarting it on the same port.

    persistence: 'always' / 'everysec' (AOF) or 'rdb' (Redis' default save points, no AOF:
    a negative control).
    """
    rng = random.Random(opt.seed)
    jobs = random.Random(opt.seed + 1)
    if persistence == "rdb":
        server = run.start_redis(extra=["--save", "3600 1 300 100 60 10000"])
    else:
        server = run.start_redis(appendonly=True, appendfsync=persistence)
    # Workers slower than the producer (2 x 4 slots of 50-150 ms, ~80 jobs/s, against 125-150
    # enqueues/s), so every kill hits a backlog of undelivered and running jobs.
    fleet = run.fleet(concurrency=4, lease=S3_LEASE, grace=15)
    fleet.wait_ready(fleet.spawn(2))
    prod = run.producer(retries=0, timeout=3.0)
    seconds = max(8.0, n / 150)

    def produce() -> None:
        for _ in paced(seconds, n):
            prod.enqueue("chaos_job", jobs.randint(50, 150))

    producer = Background(produce, "producer")
    t0 = time.monotonic()
    producer.start()
    restarts: list[tuple[float, float]] = []  # (killed at, restarted at)
    backlogs: list[int] = []
    probe = run.client()
    for k in range(kills):
        due = t0 + seconds * (k + 1) / (kills + 1)
        time.sleep(max(0.0, due - time.monotonic()))
        try:
            backlogs.append(queue_state(probe, run.keys).residual)
        except redis.RedisError:
            backlogs.append(-1)
        killed_at = time.time()
        server.kill()
        time.sleep(rng.uniform(0.3, 1.0))
        server.start(timeout=30)
        restarts.append((killed_at, time.time()))
        log(f"redis-server killed with {backlogs[-1]} jobs in it, restarted ({k + 1}/{kills})")
    producer.join_or_raise(seconds + 60)
    limit = S3_LEASE + 30
    waited, settled = run.drain(want_done=ok_seqs(run), want_dead=set(), timeout=limit + 30)
    enqueues, ledgers, dead, state = collect(run)
    late = fleet.stop_all(grace=25)
    slots = 2 * 4 * kills
    tally(
        result,
        enqueues,
        ledgers,
        dead,
        state,
        allowed_duplicates=slots,
        allowed_lost=allowed_lost,
    )
    check_exits(result, fleet)
    if late:
        result.fail(f"{len(late)} worker(s) ignored SIGTERM")
    if not settled:
        result.fail(f"not settled {waited:.0f}s after the end of production")

    # Every client reconnects within 10 s of each restart: the producer's first ok enqueue,
    # and each live worker's first START, after the restart.
    slow = []
    worst = 0.0
    for _, up in restarts:
        oks = [e.at for e in enqueues.values() if e.status == "ok" and e.at >= up]
        if oks:
            worst = max(worst, min(oks) - up)
            if min(oks) - up > RECONNECT_LIMIT:
                slow.append(f"producer after {min(oks) - up:.1f}s")
        for p in fleet.procs:
            if p.started_at > up or (p.killed_at or 1e18) < up + RECONNECT_LIMIT:
                continue
            starts = [s.at for s in ledgers.all_starts() if s.pid == p.pid and s.at >= up]
            if not starts:
                slow.append(f"worker pid {p.pid}: no job started after the restart")
            else:
                worst = max(worst, min(starts) - up)
                if min(starts) - up > RECONNECT_LIMIT:
                    slow.append(f"worker pid {p.pid} after {min(starts) - up:.1f}s")
    if slow:
        result.fail(f"clients slow to reconnect (limit {RECONNECT_LIMIT:.0f}s): {slow[:5]}")
    down = sum(up - k for k, up in restarts)
    result.note(
        f"{kills} kill -9 of redis-server ({persistence}) holding {backlogs} unfinished jobs, "
        f"{down:.1f}s down in total; "
        f"enqueues: {result.acknowledged} ok, {result.failed} failed, {result.unknown} unknown; "
        f"slowest reconnect {worst:.1f}s; {result.duplicates} duplicate DONE(s) "
        f"(allowed: a lease may expire while Redis is down)"
    )


def s3a_redis_kill_always(run: Run, result: Result, n: int, opt: Options) -> None:
    redis_kill(run, result, n, opt, kills=5 if opt.full else 2, persistence="always")


def s3b_redis_kill_everysec(run: Run, result: Result, n: int, opt: Options) -> None:
    """everysec: loss is measured and reported, bounded by ~1 s of enqueues per kill."""
    kills = 5 if opt.full else 2
    rate = n / max(8.0, n / 150)
    bound = int(kills * rate * 1.5)
    redis_kill(run, result, n, opt, kills=kills, persistence="everysec", allowed_lost=bound)
    result.note(f"everysec loss measured: {result.lost} job(s), bound {bound} (~1 s per kill)")


def control_rdb_only(run: Run, result: Result, n: int, opt: Options) -> None:
    redis_kill(run, result, n, opt, kills=1, persistence="rdb")


# --------------------------------------------------------------------------- 4: network faults

S4_LEASE = 5.0
S4_BACKOFF_CAP = 2.0  # ClientOptions.backoff_cap, the reconnect backoff cap


def s4_network_faults(run: Run, result: Result, n: int, opt: Options) -> None:
    """Everything talks to Redis through the chaos proxy: latency 200+-100 ms and 1% dropped
    replies throughout, every connection reset every 10 s, and a 15 s blackhole."""
    seconds = 60.0 if opt.full else 30.0
    server = run.start_redis()
    # Workers and the producer get a proxy each (same faults, same moments), so reconnect
    # storms can be measured for the workers' Conveyor clients alone.
    proxy = ChaosProxy("127.0.0.1", server.port, seed=opt.seed).start()
    pproxy = ChaosProxy("127.0.0.1", server.port, seed=opt.seed + 7).start()
    proxies = (proxy, pproxy)
    run.cleanups += [proxy.stop, pproxy.stop]
    fleet = run.fleet(
        url=proxy.url,
        concurrency=16,
        lease=S4_LEASE,
        grace=20,
        socket_timeout=5,
        keep_count=10 * n,
    )
    fleet.wait_ready(fleet.spawn(3), timeout=60)
    prod = run.producer(url=pproxy.url, timeout=5.0)
    jobs = random.Random(opt.seed + 1)
    threads = 16

    def produce(share: int) -> Callable[[], None]:
        def body() -> None:
            for _ in paced(seconds, share):
                prod.enqueue_unique("chaos_job", jobs.randint(10, 50))

        return body

    producers = [Background(produce(n // threads), f"producer-{i}") for i in range(threads)]
    t0 = time.monotonic()
    for px in proxies:
        px.set_latency(0.2, 0.1)
        px.set_drop(0.01)
    for p in producers:
        p.start()
    events: list[tuple[str, float]] = []  # (what, wall time it ended)
    resets_at: list[float] = []
    hole = (seconds * 0.4, seconds * 0.4 + 15.0)
    next_reset = 10.0
    in_hole = False
    while time.monotonic() - t0 < seconds:
        now = time.monotonic() - t0
        if not in_hole and hole[0] <= now < hole[1]:
            for px in proxies:
                px.blackhole(True)
            in_hole = True
            log("proxy: blackhole on")
        elif in_hole and now >= hole[1]:
            resets_at.append(time.monotonic() - t0)
            for px in proxies:
                px.blackhole(False)
            in_hole = False
            events.append(("blackhole", time.time()))
            log("proxy: blackhole off")
        if in_hole and now >= next_reset:
            next_reset += 10.0  # no reset inside the blackhole
        if now >= next_reset and not in_hole:
            count = sum(px.reset_all() for px in proxies)
            events.append(("reset", time.time()))
            resets_at.append(time.monotonic() - t0)
            log(f"proxy: reset {count} connection(s)")
            next_reset += 10.0
        time.sleep(0.05)
    if in_hole:
        for px in proxies:
            px.blackhole(False)
        events.append(("blackhole", time.time()))
    for p in producers:
        p.join_or_raise(180)
    for px in proxies:
        px.set_latency(0.0)
        px.set_drop(0.0)
    burst = proxy.max_accepts_in(0.1, since=t0)
    (run.dir / "worker-proxy-accepts.txt").write_text(
        "".join(f"{t - t0:.4f}\n" for t in proxy.accepts)
    )
    producer_burst = pproxy.max_accepts_in(0.1, since=t0)
    (run.dir / "faults.txt").write_text("".join(f"{t:.4f}\n" for t in resets_at))
    waited, settled = run.drain(want_done=ok_seqs(run), want_dead=set(), timeout=S4_LEASE + 60)
    enqueues, ledgers, dead, state = collect(run)
    admin = run.client()
    added: dict[int, int] = {}
    for stream in run.keys.streams:
        for _, fields in admin.xrange(stream, "-", "+"):
            if b"id" not in fields:  # an original enqueue (requeues and retries carry an id)
                seq = int(json.loads(fields[b"args"])[0])
                added[seq] = added.get(seq, 0) + 1
    fleet.stop_all(grace=30)
    slots = 3 * 16
    tally(result, enqueues, ledgers, dead, state, allowed_duplicates=slots)
    check_exits(result, fleet)
    twice = sorted(s for s, c in added.items() if c > 1)
    if twice:
        result.fail(f"{len(twice)} job(s) enqueued twice despite a unique key: {twice[:5]}")
    if not settled:
        result.fail(f"not settled after {waited:.0f}s")
    if burst > 10:
        result.fail(f"workers' reconnect burst: {burst} connections within 100 ms (limit 10)")
    limit = S4_BACKOFF_CAP + 5
    resumed = []
    for what, at in events:
        starts = [s.at for s in ledgers.all_starts() if s.at >= at]
        delay = (min(starts) - at) if starts else float("inf")
        resumed.append(delay)
        if delay > limit:
            result.fail(f"processing resumed {delay:.1f}s after a {what} (limit {limit:.0f}s)")
    result.note(
        f"{proxy.resets} resets, one 15 s blackhole, {proxy.dropped + pproxy.dropped} replies "
        f"dropped; {threads} producer threads; "
        f"{prod.retried_enqueues} enqueue attempts retried, {prod.found_existing} found their "
        f"first attempt had landed; {len(twice)} enqueued twice; workers: max {burst} "
        f"connections in 100 ms (producer: {producer_burst}); "
        f"processing resumed {max(resumed, default=0):.1f}s after a fault at worst; "
        f"{result.duplicates} duplicate run(s) (leases lost in the blackhole)"
    )


# --------------------------------------------------------------------------- 5: long jobs, SIGSTOP

S5_LEASE = 5.0


def _consumer_and_counts(run: Run, pid: int) -> tuple[str, dict[str, int]]:
    """A worker's consumer name (BOOT line) and its final counts (EXIT line)."""
    consumer, counts = "", {}
    path = run.ledger_dir / f"worker-{pid}.ledger"
    for line in path.read_text().splitlines():
        parts = line.split()
        if parts[0] == "BOOT":
            consumer = parts[2]
        elif parts[0] == "EXIT" and len(parts) > 4:
            counts = {k: int(v) for k, v in (kv.split("=") for kv in parts[4].split(","))}
    return consumer, counts


def _wait_for(what: str, cond: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.1)


def s5_long_jobs_and_sigstop(run: Run, result: Result, n: int, opt: Options) -> None:
    """Jobs far longer than the lease are never stolen from a live worker; a frozen one's are.

    Phase 1: a 20 s job on worker A; A is frozen (SIGSTOP) for 10 s with a 5 s lease, so
    worker B reclaims and runs it; on SIGCONT, A finishes too, and its late ack must be
    rejected (A counts the job as lost, the job's record names B). Phase 2: n jobs of 30 s
    on live workers: each runs exactly once.
    """
    run.start_redis()
    fleet = run.fleet(concurrency=4, lease=S5_LEASE, grace=40)
    (a,) = fleet.spawn(1)
    fleet.wait_ready([a])
    prod = run.producer()
    client = run.client()

    def ledgers() -> WorkerLedgers:
        return read_worker_ledgers(run.ledger_dir)

    frozen_seq, _ = prod.enqueue("chaos_long", 20.0, kind="frozen")
    _wait_for("A to start the job", lambda: frozen_seq in ledgers().starts, 15)
    (b,) = fleet.spawn(1)
    fleet.wait_ready([b])
    time.sleep(1.0)
    a.signal(signal.SIGSTOP)
    stopped_at = time.time()
    time.sleep(10.0)
    a.signal(signal.SIGCONT)
    log("worker A frozen for 10 s, then continued")
    _wait_for(
        "both runs of the frozen job to finish",
        lambda: len(ledgers().dones.get(frozen_seq, [])) >= 2,
        60,
    )
    starts = ledgers().starts[frozen_seq]
    reclaimed = [s for s in starts if s.pid == b.pid]
    if not reclaimed:
        result.fail("the frozen worker's job was not reclaimed by the live worker")
    elif reclaimed[0].at - stopped_at > S5_LEASE * 2 + 3:
        result.fail(f"reclaim took {reclaimed[0].at - stopped_at:.1f}s after SIGSTOP")

    # Phase 2: long jobs on live workers are never reclaimed.
    long_seqs = [prod.enqueue("chaos_long", 30.0, kind="long")[0] for _ in range(n)]
    _wait_for(
        "the long jobs to finish",
        lambda: all(s in ledgers().dones for s in long_seqs),
        30 + 60,
    )
    waited, settled = run.drain(want_done=ok_seqs(run), want_dead=set(), timeout=30)
    enqueues, led, dead, state = collect(run)
    fleet.stop_all(grace=45)
    tally(result, enqueues, led, dead, state, allowed_duplicates=1)
    check_exits(result, fleet)
    for seq in long_seqs:
        if len(led.starts.get(seq, [])) != 1:
            pids = [s.pid for s in led.starts.get(seq, [])]
            result.fail(f"30 s job seq {seq} started {len(pids)} times (pids {pids})")
    extra = [s for s, v in led.dones.items() if len(v) > 1 and s != frozen_seq]
    if extra:
        result.fail(f"duplicates other than the frozen job: {extra}")
    _, counts_a = _consumer_and_counts(run, a.pid)
    consumer_b, _ = _consumer_and_counts(run, b.pid)
    job_id = enqueues[frozen_seq].job_id
    record = client.get(run.keys.record(job_id or "")) if job_id else None
    owner = json.loads(record).get("worker") if record else None
    if counts_a.get("lost") != 1:
        result.fail(f"the frozen worker's late ack was not refused (its counts: {counts_a})")
    if owner != consumer_b:
        result.fail(f"the frozen job's record names {owner!r}, not the reclaiming {consumer_b}")
    if not settled:
        result.fail(f"not settled after {waited:.0f}s")
    result.note(
        f"frozen job reclaimed {reclaimed[0].at - stopped_at if reclaimed else -1:.1f}s after "
        f"SIGSTOP, A's late ack refused (A counts {counts_a}); {n} job(s) of 30 s with a "
        f"{S5_LEASE:.0f}s lease ran once each; the 1 duplicate DONE is the frozen job's"
    )


# --------------------------------------------------------------------------- 6: poison mix

S6_LEASE = 2.0


def _malformed() -> list[tuple[str, str, Callable[[int], dict[str, Any]]]]:
    """(name, expected dead reason, fields) of each kind of malformed entry."""
    now = int(time.time() * 1000)
    base = {"version": 1, "enqueued_at": now, "attempt": 1}
    return [
        (
            "bad_json",
            "malformed",
            lambda s: {**base, "task": "chaos_job", "args": "[1, 2", "kwargs": "{}"},
        ),
        ("missing_fields", "malformed", lambda s: {**base, "task": "chaos_job"}),
        (
            "unknown_task",
            "unknown_task",
            lambda s: {**base, "task": "no_such_task", "args": f"[{s}]", "kwargs": "{}"},
        ),
        (
            "huge_2mib",
            "malformed",
            lambda s: {
                **base,
                "task": "chaos_job",
                "args": json.dumps([s, "x" * (2 * MiB)]),
                "kwargs": "{}",
            },
        ),
        (
            "invalid_utf8",
            "malformed",
            lambda s: {**base, "task": b"chaos_\xff\xfe", "args": f"[{s}]", "kwargs": "{}"},
        ),
    ]


S6_CONCURRENCY = 8


def s6_poison(run: Run, result: Result, n: int, opt: Options) -> None:
    rng = random.Random(opt.seed)
    run.start_redis()
    fleet = run.fleet(concurrency=S6_CONCURRENCY, lease=S6_LEASE, grace=15, max_payload=MiB)
    fleet.wait_ready(fleet.spawn(3))
    prod = run.producer()
    n_raise = max(1, round(n * 0.01))
    n_kill = max(1, round(n * 0.005))
    malformed = _malformed()
    n_bad = max(len(malformed), round(n * 0.005))
    plan = ["raise"] * n_raise + ["suicide"] * n_kill + ["bad"] * n_bad
    plan += ["good"] * (n - len(plan))
    rng.shuffle(plan)
    seconds = max(6.0, n / 300)
    bad_kind: dict[int, tuple[str, str]] = {}
    bad_index = 0

    def produce() -> None:
        nonlocal bad_index
        for i in paced(seconds, n):
            kind = plan[i]
            if kind == "good":
                prod.enqueue("chaos_job", rng.randint(10, 50))
            elif kind == "raise":
                prod.enqueue("chaos_raise", kind="raise")
            elif kind == "suicide":
                prod.enqueue("chaos_suicide", kind="suicide")
            else:
                name, reason, make = malformed[bad_index % len(malformed)]
                bad_index += 1
                seq = prod.xadd_raw(make, kind="bad")
                bad_kind[seq] = (name, reason)

    producer = Background(produce, "producer")
    producer.start()
    while producer.is_alive():
        fleet.keep(3)
        time.sleep(0.2)
    producer.join_or_raise(10)
    good = ok_seqs(run, {"good"})
    poison = ok_seqs(run, {"raise", "suicide", "bad"})
    timeout = S6_LEASE * (tasks.SUICIDE_MAX_DELIVERIES + 2) * 3 + 60
    waited, settled = run.drain(
        want_done=good, want_dead=poison, timeout=timeout, tick=lambda: fleet.keep(3)
    )
    enqueues, ledgers, dead, state = collect(run)
    fleet.stop_all(grace=25)
    kinds = prod.kind
    suicides = suicide_pids(run)
    tally(
        result,
        enqueues,
        ledgers,
        dead,
        state,
        expect=lambda s: "done" if kinds.get(s) == "good" else "dead",
        # A worker that kills itself also takes down the acks of jobs it had just finished
        # (acks are batched), so each death may rerun what it held (issue 9's rule: slots +
        # prefetch + one ack batch); every duplicate must still come from a worker that
        # died (checked below).
        allowed_duplicates=len(suicides) * most_held(S6_CONCURRENCY),
    )
    for problem in trace_duplicates(ledgers, suicides):
        result.fail(f"duplicate not traced to a killed worker: {problem}")
    check_exits(result, fleet, suicides)
    if not settled:
        result.fail(f"not settled after {waited:.0f}s (limit {timeout:.0f}s)")

    deads = dead_by_seq(dead)
    suicide_times = sorted(s.at for s in ledgers.all_starts() if kinds.get(s.seq) == "suicide")
    problems: list[str] = []
    first_try = 0
    for seq in sorted(poison):
        entries = deads.get(seq)
        if not entries:
            continue  # counted as lost already
        e = entries[0]
        starts = ledgers.starts.get(seq, [])
        kind = kinds.get(seq)
        if kind == "raise":
            attempts = {s.attempt for s in starts}
            want = set(range(1, tasks.RAISE_RETRIES + 2))
            if e.reason != "failed":
                problems.append(f"raise seq {seq}: dead reason {e.reason!r}, not 'failed'")
            elif e.attempt != tasks.RAISE_RETRIES + 1 or e.history != tasks.RAISE_RETRIES + 1:
                problems.append(
                    f"raise seq {seq}: dead after attempt {e.attempt} with {e.history} "
                    f"history entries, want exactly {tasks.RAISE_RETRIES + 1}"
                )
            elif attempts != want and attempts != {0}:
                problems.append(f"raise seq {seq}: started attempts {sorted(attempts)}")
        elif kind == "suicide":
            if e.reason != "max_deliveries":
                problems.append(f"suicide seq {seq}: dead reason {e.reason!r}")
            elif e.deliveries <= tasks.SUICIDE_MAX_DELIVERIES:
                problems.append(f"suicide seq {seq}: dead after {e.deliveries} deliveries")
            elif len(starts) > tasks.SUICIDE_MAX_DELIVERIES:
                problems.append(f"suicide seq {seq}: ran {len(starts)} times")
        else:
            name, reason = bad_kind.get(seq, ("?", "?"))
            if e.reason != reason:
                problems.append(f"{name} seq {seq}: dead reason {e.reason!r}, want {reason!r}")
            if starts:
                problems.append(f"{name} seq {seq}: a malformed job was run")
            if e.deliveries == 1:
                first_try += 1
            else:
                # Only acceptable when the worker holding it was killed by a suicide job
                # (which takes everything that process held with it) while it held it.
                added = enqueues[seq].at
                if not any(added <= t <= e.dead_at_ms / 1000 for t in suicide_times):
                    problems.append(
                        f"{name} seq {seq}: dead after {e.deliveries} deliveries with no "
                        "worker death in between"
                    )
    for p in problems[:10]:
        result.fail(p)
    if len(problems) > 10:
        result.fail(f"... and {len(problems) - 10} more poison-job problems")
    n_bad_ok = len(ok_seqs(run, {"bad"}))
    result.note(
        f"{len(good)} good, {n_raise} raising, {n_kill} suicidal, {n_bad_ok} malformed "
        f"({first_try} dead on first delivery); {len(suicides)} worker suicides, "
        f"0 other worker deaths allowed; drain {waited:.1f}s"
    )


# --------------------------------------------------------------------------- 7: dependency down


def s7_dependency_down(run: Run, result: Result, n: int, opt: Options) -> None:
    """A dependency is down for a while: jobs back off (base 1 s, cap 60 s, full jitter), so
    attempts per job stay logarithmic, and all complete within 120 s of its recovery."""
    down = 60.0 if opt.full else 20.0
    flag = run.dir / "dependency-down"
    flag.touch()
    run.start_redis()
    fleet = run.fleet(
        env={tasks.DEP_FLAG_ENV: str(flag)}, concurrency=16, lease=5.0, grace=15, block_ms=200
    )
    fleet.wait_ready(fleet.spawn(3))
    prod = run.producer()
    t0 = time.monotonic()
    for start in range(0, n, 500):
        prod.enqueue_many([("chaos_dep", (5,), "good")] * min(500, n - start))
    time.sleep(max(0.0, t0 + down - time.monotonic()))
    flag.unlink()
    recovered = time.time()
    log(f"dependency back after {down:.0f}s")
    limit = 120.0
    _, settled = run.drain(want_done=ok_seqs(run), want_dead=set(), timeout=limit + 30)
    enqueues, ledgers, dead, state = collect(run)
    fleet.stop_all(grace=25)
    tally(result, enqueues, ledgers, dead, state)
    check_exits(result, fleet)
    last_done = max((d.at for d in ledgers.all_dones()), default=recovered)
    if not settled or last_done - recovered > limit:
        result.fail(f"last job done {last_done - recovered:.0f}s after recovery (limit {limit})")
    attempts = [len(v) for v in ledgers.starts.values()]
    # Full jitter: each delay is uniform(0, min(cap, base * 2**k)), so reaching `down` takes
    # about log2(down/base) attempts plus a tail; a fixed or linear retry would take hundreds.
    bound = 2 * math.log2(down / tasks.DEP_BACKOFF.base) + 6
    worst = max(attempts, default=0)
    mean = sum(attempts) / max(len(attempts), 1)
    if worst > bound:
        result.fail(f"a job was tried {worst} times in {down:.0f}s (bound 2*log2(down/base)+6)")
    result.note(
        f"dependency down {down:.0f}s: attempts per job mean {mean:.1f}, max {worst} "
        f"(bound {bound:.1f}); all done {last_done - recovered:.0f}s after recovery"
    )


# --------------------------------------------------------------------------- 9: maxmemory


def s9_maxmemory(run: Run, result: Result, n: int, opt: Options) -> None:
    """maxmemory 64mb noeviction: 1 KiB jobs until OOM. Every enqueue gets an id or a clear
    OOM error (no unknowns); workers drain while Redis is at its limit."""
    run.start_redis()
    admin = run.client()
    # The workers have run before (their group exists), then the backlog outgrew memory.
    fleet = run.fleet(concurrency=8, lease=3.0, grace=15, trim_every=0.5)
    first = fleet.spawn(1)
    fleet.wait_ready(first)
    fleet.stop_all(grace=15)
    admin.config_set("maxmemory", "64mb")
    admin.config_set("maxmemory-policy", "noeviction")
    limit = int(admin.info("memory")["maxmemory"])
    prod = run.producer(retries=0)
    blob = "x" * 1024
    refused_in_a_row = 0
    while refused_in_a_row < 200 and len(prod.status) < n:
        _, status = prod.enqueue("chaos_blob", blob)
        refused_in_a_row = refused_in_a_row + 1 if status != "ok" else 0
    backlog = sum(1 for v in prod.status.values() if v == "ok")
    log(f"Redis full after {backlog} jobs; starting workers")
    samples: list[tuple[float, int, int]] = []  # (time, used_memory, jobs done)
    fleet.wait_ready(fleet.spawn(2))
    t_end = time.monotonic() + 20.0
    while time.monotonic() < t_end:  # keep Redis at its limit while the workers drain
        for _ in range(50):
            prod.enqueue("chaos_blob", blob)
        used = int(admin.info("memory")["used_memory"])
        samples.append((time.time(), used, len(count_dones(run.ledger_dir))))
        time.sleep(0.05)
    waited, settled = run.drain(want_done=ok_seqs(run), want_dead=set(), timeout=n / 100 + 60)
    enqueues, ledgers, dead, state = collect(run)
    fleet.stop_all(grace=25)
    tally(result, enqueues, ledgers, dead, state)
    check_exits(result, fleet)
    if not settled:
        result.fail(f"not settled after {waited:.0f}s")
    unclear = [e for e in enqueues.values() if e.status == "failed" and "maxmemory" not in e.error]
    if result.unknown:
        result.fail(f"{result.unknown} enqueue(s) ended with an unknown outcome")
    if unclear:
        result.fail(f"{len(unclear)} refused enqueue(s) without a clear OOM error: {unclear[0]}")
    at_limit = [(t, d) for t, used, d in samples if used >= limit * 0.95]
    progress = at_limit[-1][1] - at_limit[0][1] if len(at_limit) > 1 else 0
    if progress <= 0:
        result.fail("workers made no progress while Redis was at its memory limit")
    result.note(
        f"maxmemory {limit >> 20} MiB: {backlog} jobs of 1 KiB before the first refusal; "
        f"{result.failed} refused with an OOM error, {result.unknown} unknown; "
        f"{progress} job(s) done while used_memory was at >= 95% of the limit"
    )


# --------------------------------------------------------------------------- 8: backlog + trim


def _keep_for(n: int) -> int:
    return max(100, n // 5)


def s8_retention(run: Run, result: Result, n: int, opt: Options) -> None:
    """A backlog of n under a retention of n/5: Conveyor's trimming must lose nothing."""
    keep = _keep_for(n)
    run.start_redis()
    prod = run.producer()
    backlog = int(n * 0.8)
    for start in range(0, backlog, 500):
        prod.enqueue_many([("chaos_job", (1,), "good")] * min(500, backlog - start))
    fleet = run.fleet(concurrency=4, lease=3.0, keep_count=keep, trim_every=0.2, max_trim=n)
    fleet.wait_ready(fleet.spawn(2))
    rest = n - backlog
    for _ in paced(3.0, (rest + 49) // 50):
        prod.enqueue_many([("chaos_job", (1,), "good")] * min(50, n - len(prod.status)))
    waited, settled = run.drain(want_done=ok_seqs(run), want_dead=set(), timeout=n / 40 + 60)
    client = run.client()
    length = 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        length = int(client.xlen(run.keys.stream("normal")))
        if length <= keep:
            break
        time.sleep(0.2)
    enqueues, ledgers, dead, state = collect(run)
    fleet.stop_all(grace=25)
    tally(result, enqueues, ledgers, dead, state)
    check_exits(result, fleet)
    if not settled:
        result.fail(f"not settled after {waited:.0f}s")
    if length > keep:
        result.fail(f"stream still holds {length} entries, over the retention of {keep}")
    result.note(
        f"backlog {backlog} then {rest} more, retention keep_count={keep}: the stream was "
        f"trimmed from {n} entries to {length}; drain {waited:.1f}s"
    )


def control_maxlen(run: Run, result: Result, n: int, opt: Options) -> None:
    """NEGATIVE CONTROL: plain XADD MAXLEN under the same backlog deletes undelivered jobs."""
    keep = _keep_for(n)
    run.start_redis()
    prod = run.producer()

    def fields(seq: int) -> dict[str, Any]:
        f = encode_fields("chaos_job", [seq, 1], {}, enqueued_at=int(time.time() * 1000))
        return dict(f)

    for _ in range(n):
        prod.xadd_raw(fields, kind="good", maxlen=keep)
    fleet = run.fleet(concurrency=4, lease=3.0, keep_count=10 * n)
    fleet.wait_ready(fleet.spawn(2))
    run.drain(want_done=ok_seqs(run), want_dead=set(), timeout=n / 40 + 60)
    enqueues, ledgers, dead, state = collect(run)
    fleet.stop_all(grace=25)
    tally(result, enqueues, ledgers, dead, state)
    check_exits(result, fleet)
    result.note(f"XADD MAXLEN {keep} with a backlog of {n}: expected ~{n - keep} lost")


def control_eviction(run: Run, result: Result, n: int, opt: Options) -> None:
    """NEGATIVE CONTROL: maxmemory with allkeys-lru lets Redis evict queue keys, and the jobs
    in them, without telling anyone (Conveyor's workers warn about this policy at start)."""
    run.start_redis()
    admin = run.client()
    fleet = run.fleet(concurrency=8, lease=3.0, grace=15)
    fleet.wait_ready(fleet.spawn(1))  # the group exists, as in any running deployment
    fleet.stop_all(grace=15)
    admin.config_set("maxmemory", "8mb")
    admin.config_set("maxmemory-policy", "allkeys-lru")
    prod = run.producer(retries=0)
    blob = "x" * 1024
    while len(prod.status) < n:
        prod.enqueue("chaos_blob", blob)
    evicted = int(admin.info("stats")["evicted_keys"])
    fleet.wait_ready(fleet.spawn(2))
    run.drain(want_done=ok_seqs(run), want_dead=set(), timeout=30)
    enqueues, ledgers, dead, state = collect(run)
    fleet.stop_all(grace=25)
    tally(result, enqueues, ledgers, dead, state)
    check_exits(result, fleet)
    result.note(f"maxmemory 8 MiB, allkeys-lru, {n} jobs of 1 KiB: {evicted} key(s) evicted")


# --------------------------------------------------------------------------- 10: no leaks


def s10_no_leaks(run: Run, result: Result, n: int, opt: Options) -> None:
    """n jobs with a result TTL of 60 s and 200 worker start/stop cycles: 70 s after the
    drain, every non-stream key has a TTL, used_memory is within 5 MiB of the start, and
    XINFO lists no more consumers than live workers."""
    cycles = 200 if opt.full else 20
    run.start_redis()
    admin = run.client()
    fleet = run.fleet(concurrency=16, lease=3.0, grace=15)
    fleet.wait_ready(fleet.spawn(3))
    start_memory = int(admin.info("memory")["used_memory"])
    prod = run.producer()

    def produce() -> None:
        for start in range(0, n, 500):
            while True:  # keep the backlog bounded so the test measures leaks, not backlog
                st = queue_state(admin, run.keys)
                if st.undelivered < 50_000:
                    break
                time.sleep(0.2)
            prod.enqueue_many([("chaos_ttl", (), "good")] * min(500, n - start))

    cycler_fleet = run.fleet(concurrency=4, lease=3.0, grace=15)
    cycled: list[int] = []

    def cycle() -> None:
        for _ in range(cycles):
            (p,) = cycler_fleet.spawn(1)
            cycler_fleet.wait_ready([p], timeout=60)
            cycler_fleet.sigterm(p)
            p.proc.wait(60)
            cycled.append(p.pid)

    producer = Background(produce, "producer")
    cycler = Background(cycle, "cycler")
    producer.start()
    cycler.start()
    producer.join_or_raise(3600)
    cycler.join_or_raise(3600)
    waited, settled = run.drain(want_done=ok_seqs(run), want_dead=set(), timeout=600)
    log(f"{n} jobs drained; waiting 70 s for results to expire")
    time.sleep(70)
    enqueues, ledgers, dead, state = collect(run)
    end_memory = int(admin.info("memory")["used_memory"])
    no_ttl: dict[str, int] = {}
    for key in admin.scan_iter(count=1000):
        if admin.type(key) == b"stream":
            continue
        if admin.pttl(key) == -1:
            shape = _s(key)
            shape = shape.split(":job:")[0] + ":job:*" if ":job:" in shape else shape
            no_ttl[shape] = no_ttl.get(shape, 0) + 1
    consumers = 0
    for level_stream in run.keys.streams:
        if admin.exists(level_stream):
            with contextlib.suppress(redis.ResponseError):
                consumers = max(consumers, len(admin.xinfo_consumers(level_stream, GROUP)))
    live = len(fleet.alive()) + len(cycler_fleet.alive())
    fleet.stop_all(grace=25)
    tally(result, enqueues, ledgers, dead, state)
    check_exits(result, fleet)
    check_exits(result, cycler_fleet)
    if not settled:
        result.fail(f"not settled after {waited:.0f}s")
    if no_ttl:
        result.fail(f"non-stream keys without a TTL: {no_ttl}")
    grown = end_memory - start_memory
    if grown > 5 * MiB:
        result.fail(f"used_memory grew by {grown / MiB:.1f} MiB (limit 5 MiB)")
    if consumers > live:
        result.fail(f"XINFO lists {consumers} consumers for {live} live workers")
    result.note(
        f"{len(cycled)} worker start/stop cycles; used_memory {start_memory / MiB:.1f} -> "
        f"{end_memory / MiB:.1f} MiB 70 s after the drain; {consumers} consumer(s) for "
        f"{live} live worker(s)"
    )


def _s(v: Any) -> str:
    return v.decode(errors="replace") if isinstance(v, bytes) else str(v)


# --------------------------------------------------------------------------- control: NOACK


def control_noack(run: Run, result: Result, n: int, opt: Options) -> None:
    """NEGATIVE CONTROL: consumers that read with NOACK lose what they held when killed."""
    rng = random.Random(opt.seed)
    jobs = random.Random(opt.seed + 1)
    run.start_redis()
    naive = run.fleet(naive_noack=True, concurrency=10)
    naive.wait_ready(naive.spawn(2))
    prod = run.producer()
    seconds = max(6.0, n / 150)

    def produce() -> None:
        for _ in paced(seconds, n // 10):
            prod.enqueue_many([("chaos_job", (jobs.randint(50, 150),), "good")] * 10)

    producer = Background(produce, "producer")
    producer.start()
    kills = kill_loop(
        run,
        naive,
        rng,
        keep=2,
        interval=(0.5, 1.5),
        until=lambda: not producer.is_alive(),
        limit=seconds + 60,
    )
    producer.join_or_raise(10)
    for p in naive.alive():
        naive.sigkill(p)
    fleet = run.fleet(concurrency=8, lease=2.0)
    fleet.spawn(2)
    run.drain(want_done=ok_seqs(run), want_dead=set(), timeout=60)
    enqueues, ledgers, dead, state = collect(run)
    fleet.stop_all(grace=25)
    tally(result, enqueues, ledgers, dead, state, allowed_duplicates=kills * 10)
    check_exits(result, fleet)
    result.note(f"{kills + 2} SIGKILLs of NOACK consumers, then 2 Conveyor workers drained")


# --------------------------------------------------------------------------- registry

SCENARIOS: dict[str, Scenario] = {
    s.key: s
    for s in [
        Scenario("1", "SIGKILL random workers", s1_sigkill_workers, 1000, 10_000),
        Scenario("2", "rolling SIGTERM", s2_rolling_sigterm, None, 10_000),
        Scenario("3a", "kill -9 redis, AOF always", s3a_redis_kill_always, 1000, 10_000),
        Scenario("3b", "kill -9 redis, AOF everysec", s3b_redis_kill_everysec, None, 10_000),
        Scenario("4", "network faults via proxy", s4_network_faults, None, 2_000),
        Scenario("5", "30 s jobs, 5 s lease, SIGSTOP", s5_long_jobs_and_sigstop, None, 4),
        Scenario("6", "poison mix", s6_poison, 1000, 10_000),
        Scenario("7", "dependency down, backoff", s7_dependency_down, None, 5_000),
        Scenario("8", "backlog, Conveyor retention", s8_retention, 1000, 50_000),
        Scenario("9", "maxmemory 64mb noeviction", s9_maxmemory, None, 200_000),
        Scenario("10", "200k jobs, TTLs, no leaks", s10_no_leaks, None, 200_000),
        Scenario("C-maxlen", "control: XADD MAXLEN", control_maxlen, 1000, 50_000, control=True),
        Scenario("C-noack", "control: NOACK reads", control_noack, 1000, 10_000, control=True),
        Scenario(
            "C-rdb", "control: RDB only, kill -9", control_rdb_only, 1000, 10_000, control=True
        ),
        Scenario(
            "C-lru", "control: allkeys-lru eviction", control_eviction, None, 20_000, control=True
        ),
    ]
}

SMOKE = [k for k, s in SCENARIOS.items() if s.smoke is not None]
