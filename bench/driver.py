"""Run one workload of one participant and write its measurements as JSON.

Started by bench/run.py inside the participant's own virtualenv, against a private redis-server
that run.py started for this one measurement (BENCH_REDIS_URL), so nothing is shared between
peers or workloads. The producer runs here; workers are the peer's own CLI, started as real
subprocesses (each in its own process group, whose id is written to ``<workdir>/pgids`` so that
run.py can clean up if this process is killed). Tasks append one line per execution to a record
file (see bench/peers/_record.py): every workload checks that each job ran exactly once.

    python -m bench.driver --peer conveyor --workload single --jobs 2000 --out r.json --workdir d
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterable
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

import redis

REPO = Path(__file__).resolve().parent.parent
SETTLE_S = 0.5  # after the last job ran: lets the last acks/results land before counting
STOP_GRACE_S = 15.0
LATENCY_JOBS = 200
LATENCY_GAP_S = 0.010
LATENCY_WARMUP = 5
#: The background load of latency_load: a bulk enqueue every LOAD_TICK_S, ids from here up
#: (small bursts: a 10 ms tick queued 5 ms of work at once, which is queueing, not latency).
LOAD_TICK_S = 0.002
LOAD_FIRST_ID = 1_000_000
GATE_WAIT_S = 60.0


class BenchError(RuntimeError):
    pass


class _Terminated(BaseException):
    pass


def _on_term(signum: int, frame: object) -> None:
    raise _Terminated(f"driver received {signal.Signals(signum).name}")


# ----------------------------------------------------------------------------- records


class Records:
    """Lines appended by tasks to the record file: ``i start_ns end_ns pid ppid``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0
        self._pos = 0
        path.touch()

    def poll(self) -> int:
        with open(self.path, "rb") as fh:
            fh.seek(self._pos)
            chunk = fh.read()
        complete = chunk.rfind(b"\n") + 1
        self._pos += complete
        self.count += chunk[:complete].count(b"\n")
        return self.count

    def wait(self, n: int, deadline: float, workers: WorkerGroup | None, what: str) -> None:
        """Until ``n`` executions are recorded; fails early if every worker process exited."""
        last_count, last_change = -1, time.monotonic()
        while self.poll() < n:
            now = time.monotonic()
            if self.count != last_count:
                last_count, last_change = self.count, now
            if workers is not None and not workers.alive():
                raise BenchError(
                    f"{what}: every worker process exited after {self.count}/{n} jobs\n"
                    + workers.log_tail()
                )
            if now > deadline:
                tail = workers.log_tail() if workers is not None else ""
                raise BenchError(
                    f"{what}: timed out with {self.count}/{n} jobs run (last progress "
                    f"{now - last_change:.1f}s ago)\n{tail}"
                )
            time.sleep(0.01)

    def read(self) -> list[tuple[int, int, int, int, int]]:
        rows = []
        for line in self.path.read_bytes().splitlines():
            a, b, c, d, e = line.split()
            rows.append((int(a), int(b), int(c), int(d), int(e)))
        return rows


def verify(rows: list[tuple[int, int, int, int, int]], expected: Iterable[int]) -> dict[str, Any]:
    """Each expected job ran exactly once, and nothing else ran."""
    want = set(expected)
    runs = Counter(r[0] for r in rows)
    missing = sorted(want - set(runs))
    extra = sorted(set(runs) - want)
    repeated = sorted(i for i, c in runs.items() if c > 1 and i in want)
    ok = not missing and not extra and not repeated
    out: dict[str, Any] = {"ok": ok, "expected": len(want), "executions": len(rows)}
    if not ok:
        out.update(missing=len(missing), repeated=len(repeated), unexpected=len(extra))
        out["examples"] = {
            "missing": missing[:5],
            "repeated": repeated[:5],
            "unexpected": extra[:5],
        }
    return out


def describe(check: dict[str, Any]) -> str:
    """A verify() result that failed, in words."""
    n, ex = check["expected"], check.get("examples", {})
    parts = []
    if check.get("missing"):
        parts.append(f"{check['missing']} of {n} jobs never ran (e.g. {ex['missing']})")
    if check.get("repeated"):
        parts.append(f"{check['repeated']} of {n} jobs ran more than once (e.g. {ex['repeated']})")
    if check.get("unexpected"):
        parts.append(f"{check['unexpected']} unexpected job numbers ran (e.g. {ex['unexpected']})")
    return "; ".join(parts) + f"; {check['executions']} executions in all"


def drain_rate(
    rows: list[tuple[int, int, int, int, int]],
    gate_ns: int,
    worker_id: str,
    acked_ns: int | None = None,
) -> dict[str, Any]:
    """Jobs/s from the moment the start gate opened (every worker process had booted and was
    holding its first job) to the last ack when ``acked_ns`` is known (``timed_to``:
    "last ack"), else to the last task's end by the tasks' own clocks ("last task end")."""
    last_end = max(r[2] for r in rows)
    last = last_end if acked_ns is None else max(acked_ns, last_end)
    column = 4 if worker_id == "ppid" else 3
    return {
        "rate": len(rows) / max(last - gate_ns, 1) * 1e9,
        "seconds": (last - gate_ns) / 1e9,
        "timed_to": "last task end" if acked_ns is None else "last ack",
        "ack_tail_ms": None if acked_ns is None else round((last - last_end) / 1e6, 3),
        "worker_processes_seen": len({r[column] for r in rows}),
    }


# ----------------------------------------------------------------------------- workers


class WorkerGroup:
    """The peer's worker command(s), started as subprocesses in their own process groups."""

    def __init__(
        self,
        ctx: Context,
        processes: int,
        io: bool,
        record: Path,
        tag: str,
        gate: Path | None = None,
        slots: int | None = None,
    ) -> None:
        self.ctx = ctx
        bin_dir = str(Path(sys.executable).parent)
        more = {"slots": slots} if slots else {}
        self.commands, extra_env, self.what = ctx.mod.workers(bin_dir, processes, io, **more)
        self.env = dict(os.environ, BENCH_RECORD=str(record), **extra_env)
        self.env["BENCH_WORKER_ID"] = getattr(ctx.mod, "WORKER_ID", "pid")
        if gate is not None:
            self.env["BENCH_GATE"] = str(gate)
        self.log = ctx.workdir / f"{ctx.peer}-{ctx.workload}-{tag}.log"
        #: where the workers leave their ack lag histograms (peers with ACK_LAG_ENV only)
        self.ack_lag_file: Path | None = None
        lag_env = getattr(ctx.mod, "ACK_LAG_ENV", None)
        if lag_env:
            self.ack_lag_file = self.log.with_suffix(".acklag")
            self.ack_lag_file.unlink(missing_ok=True)
            self.env[lag_env] = str(self.ack_lag_file)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.stop_info: dict[str, Any] = {}
        ctx.concurrency[tag] = self.what

    def __enter__(self) -> WorkerGroup:
        with open(self.log, "ab") as log:
            for argv in self.commands:
                proc = subprocess.Popen(
                    argv,
                    cwd=REPO,
                    env=self.env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
                self.procs.append(proc)
                with open(self.ctx.workdir / "pgids", "a") as fh:
                    fh.write(f"{proc.pid}\n")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def alive(self) -> bool:
        return any(p.poll() is None for p in self.procs)

    def cpu_seconds(self) -> float:
        """CPU time of every live process in the workers' process groups (children too)."""
        groups = {p.pid for p in self.procs}
        total = 0.0
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                with contextlib.suppress(OSError, ValueError, IndexError):
                    group, seconds = _process_cpu(int(entry.name))
                    if group in groups:
                        total += seconds
        return total

    def ack_lag(self) -> dict[str, float] | None:
        """The workers' ack lag, merged (after stop(): each process writes it as it exits)."""
        if self.ack_lag_file is None or not self.ack_lag_file.exists():
            return None
        summary: dict[str, float] = self.ctx.mod.ack_lag_summary(str(self.ack_lag_file))
        return summary

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "--- worker log tail ---\n" + "\n".join(text[-lines:])

    def stop(self) -> None:
        """The peer's graceful stop signal to each main process, SIGKILL to the group after
        STOP_GRACE_S, then SIGKILL to whatever is left in the group (stray children)."""
        if not self.procs:
            return
        name = getattr(self.ctx.mod, "STOP_SIGNAL", "SIGTERM")
        sig = getattr(signal, name)
        grace = getattr(self.ctx.mod, "STOP_GRACE_S", STOP_GRACE_S)
        t0 = time.monotonic()
        to_group = getattr(self.ctx.mod, "STOP_GROUP", False)
        for p in self.procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    (os.killpg if to_group else os.kill)(p.pid, sig)
        killed = 0
        for p in self.procs:
            try:
                p.wait(timeout=max(0.1, t0 + grace - time.monotonic()))
            except subprocess.TimeoutExpired:
                killed += 1
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=10)
        for p in self.procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGKILL)
        self.stop_info = {"signal": name, "seconds": round(time.monotonic() - t0, 2)}
        if killed:
            self.stop_info["killed_after_grace"] = killed
        self.procs = []


# ----------------------------------------------------------------------------- producer


Step = tuple[Any, ...]


def run_producer(mod: ModuleType, kind: str, steps: list[Step]) -> list[Any]:
    """Open the peer's producer of ``kind`` (sync or async), run the steps, close it.

    Steps: ("call", fn) runs fn() (blocking; from a thread in the async case);
    ("enqueue", task, ids) one job at a time, timed; ("bulk", task, ids) the bulk API, timed;
    ("paced", task, ids, gap_s) one at a time every gap_s, returning each job's enqueue time;
    ("roundtrip", task, ids, gap_s) likewise, each waiting for its result: the seconds from
    the enqueue call to the result (sync producers with a ``roundtrip`` method only).
    """
    cls = mod.PRODUCERS[kind]
    if kind == "sync":
        producer = cls()
        try:
            return [_sync_step(producer, step) for step in steps]
        finally:
            producer.close()

    async def main() -> list[Any]:
        producer = cls()
        await producer.start()
        try:
            return [await _async_step(producer, step) for step in steps]
        finally:
            await producer.close()

    return asyncio.run(main())


def _sync_step(producer: Any, step: Step) -> Any:
    op = step[0]
    if op == "call":
        return step[1]()
    task, ids = step[1], list(step[2])
    t0 = time.perf_counter()
    if op == "bulk":
        producer.enqueue_many(task, ids)
        return time.perf_counter() - t0
    if op == "enqueue":
        enqueue = producer.enqueue
        for i in ids:
            enqueue(task, i)
        return time.perf_counter() - t0
    stamps = {}
    for k, i in enumerate(ids):
        delay = t0 + k * step[3] - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        if op == "roundtrip":
            stamps[i] = producer.roundtrip(task, i)
            continue
        stamps[i] = time.time_ns()
        producer.enqueue(task, i)
    return stamps


async def _async_step(producer: Any, step: Step) -> Any:
    op = step[0]
    if op == "call":
        return await asyncio.to_thread(step[1])
    task, ids = step[1], list(step[2])
    t0 = time.perf_counter()
    if op == "bulk":
        await producer.enqueue_many(task, ids)
        return time.perf_counter() - t0
    if op == "enqueue":
        enqueue = producer.enqueue
        for i in ids:
            await enqueue(task, i)
        return time.perf_counter() - t0
    stamps = {}
    for k, i in enumerate(ids):
        delay = t0 + k * step[3] - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        stamps[i] = time.time_ns()
        await producer.enqueue(task, i)
    return stamps


# ----------------------------------------------------------------------------- workloads


class Context:
    def __init__(self, args: argparse.Namespace, mod: ModuleType) -> None:
        self.peer: str = args.peer
        self.workload: str = args.workload
        self.jobs: int = args.jobs
        self.mod = mod
        self.workdir = Path(args.workdir)
        self.deadline = time.monotonic() + args.timeout
        self.admin = redis.Redis.from_url(os.environ["BENCH_REDIS_URL"])
        self.primary: str = next(iter(mod.PRODUCERS))
        self.concurrency: dict[str, str] = {}
        self.notes: list[str] = []
        self._n = 0

    def record_file(self) -> Records:
        """A fresh record file: repetitions share the work dir, so earlier ones are removed."""
        self._n += 1
        path = self.workdir / f"{self.peer}-{self.workload}-{self._n}.rec"
        for stale in (path, path.with_suffix(".gate"), path.with_suffix(".gate.ready")):
            stale.unlink(missing_ok=True)
        return Records(path)

    def has_bulk(self, kind: str | None = None) -> bool:
        return hasattr(self.mod.PRODUCERS[kind or self.primary], "enqueue_many")

    def used_memory(self) -> int:
        return int(self.admin.info("memory")["used_memory"])

    def redis_cpu(self) -> float:
        """CPU seconds redis-server has used (user + sys, all its threads)."""
        cpu = self.admin.info("cpu")
        return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])

    def commandstats(self) -> dict[str, int]:
        stats = self.admin.info("commandstats")
        calls = {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}
        for own in ("info", "config|resetstat", "config"):
            calls.pop(own, None)
        return {k: v for k, v in sorted(calls.items(), key=lambda kv: -kv[1]) if v}


def machine_cpu() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat (idle and iowait not busy)."""
    with open("/proc/stat") as fh:
        values = [int(v) for v in fh.readline().split()[1:]]
    return sum(values) - values[3] - values[4], sum(values)


def _process_cpu(pid: int) -> tuple[int, float]:
    """(process group, user + system CPU seconds) of one process, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return int(fields[2]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def open_gate(ctx: Context, gate: Path, expected: int, workers: WorkerGroup) -> dict[str, Any]:
    """Wait until ``expected`` worker processes hold their first job at the gate, open it."""
    ready = Path(str(gate) + ".ready")
    t0 = time.monotonic()
    limit = min(ctx.deadline, t0 + GATE_WAIT_S)
    arrived: set[bytes] = set()
    while True:
        if ready.exists():
            arrived = set(ready.read_bytes().split())
        if len(arrived) >= expected:
            break
        if not workers.alive():
            raise BenchError("every worker process exited before the start\n" + workers.log_tail())
        if time.monotonic() > limit:
            if not arrived:
                raise BenchError(
                    f"no worker process picked up a job within {time.monotonic() - t0:.0f}s\n"
                    + workers.log_tail()
                )
            break
        time.sleep(0.005)
    out_cpu = ctx.redis_cpu()
    cpu_at_gate = (machine_cpu(), workers.cpu_seconds())
    gate_ns = time.time_ns()
    gate.touch()
    out: dict[str, Any] = {"processes_at_gate": len(arrived), "boot_seconds": time.monotonic() - t0}
    if len(arrived) < expected:
        out["note"] = f"started with {len(arrived)} of {expected} processes at the gate"
    out["gate_ns"] = gate_ns
    out["redis_cpu_at_gate"] = out_cpu
    out["cpu_at_gate"] = cpu_at_gate
    return out


def drain(
    ctx: Context,
    processes: int,
    records: Records,
    n: int,
    expected: Iterable[int],
    io: bool,
    slots: int | None = None,
) -> dict[str, Any]:
    """Start the workers on a queue already holding n jobs, open the start gate when every
    worker process holds its first job, wait for all n, stop the workers, verify."""
    out: dict[str, Any] = {}
    tag = f"{'io' if io else 'noop'}-{processes}p" + (f"-c{slots}" if slots else "")
    gate = records.path.with_suffix(".gate")
    with WorkerGroup(ctx, processes, io, records.path, tag, gate, slots) as workers:
        want = getattr(ctx.mod, "IO_PROCESSES", 1) if io else processes
        start = open_gate(ctx, gate, want, workers)
        records.wait(n, ctx.deadline, workers, f"drain with {processes} process(es)")
        acked_ns = wait_acked(ctx)
        cpu_s = ctx.redis_cpu() - start.pop("redis_cpu_at_gate")
        (busy0, total0), workers0 = start.pop("cpu_at_gate")
        busy1, total1 = machine_cpu()
        wall_s = (time.time_ns() - start["gate_ns"]) / 1e9
        start["redis_cpu_pct"] = round(100 * cpu_s / wall_s, 1)
        workers_s = workers.cpu_seconds() - workers0
        start["workers_cpu_pct"] = round(100 * workers_s / wall_s, 1)
        # CPU per job (issue 9, item 6): what a job costs Redis and the workers, whatever
        # the drain's wall time; with 2 processes it should stay what it is with one.
        start["redis_cpu_us_per_job"] = round(1e6 * cpu_s / n, 2)
        start["workers_cpu_us_per_job"] = round(1e6 * workers_s / n, 2)
        cores = os.cpu_count() or 1
        start["machine_busy_pct"] = round(100 * cores * (busy1 - busy0) / (total1 - total0), 1)
        time.sleep(SETTLE_S)
        out["commandstats"] = ctx.commandstats()
    out["stop"] = workers.stop_info
    lag = workers.ack_lag()
    if lag is not None:
        out["ack_lag"] = lag
    rows = records.read()
    out["verify"] = verify(rows, expected)
    gate_ns = start.pop("gate_ns")
    out["drain"] = {
        **drain_rate(rows, gate_ns, getattr(ctx.mod, "WORKER_ID", "pid"), acked_ns),
        **start,
    }
    return out


def wait_acked(ctx: Context, timeout: float = 30.0) -> int | None:
    """For a peer on Redis Streams (``ACK_STREAMS``/``ACK_GROUP``: Conveyor and the floors),
    wait until its group has no lag and an empty pending list, and return that moment
    (time.time_ns): its drain is timed to the last ack, what a crash could no longer rerun.
    Peers without them return None and are timed to their last task's end, as before."""
    streams = getattr(ctx.mod, "ACK_STREAMS", None)
    if not streams:
        return None
    group = ctx.mod.ACK_GROUP
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        settled = True
        for stream in streams:
            try:
                groups = ctx.admin.xinfo_groups(stream)
            except redis.ResponseError:
                continue  # a level no job used: no stream, nothing to ack
            for g in groups:
                name = g["name"].decode() if isinstance(g["name"], bytes) else g["name"]
                if name == group and (g["pending"] or g.get("lag")):
                    settled = False
        if settled:
            return time.time_ns()
        time.sleep(0.0005)
    raise BenchError(f"acks still pending {timeout:.0f}s after the last task ended")


def w_single(ctx: Context) -> dict[str, Any]:
    """(a) enqueue N one at a time, (e) bytes per queued job, (b) drain with one process,
    (d) Redis commands per job for all of it (CONFIG RESETSTAT before the first enqueue)."""
    n = ctx.jobs
    mem: dict[str, int] = {}

    def before() -> None:
        mem["before"] = ctx.used_memory()
        ctx.admin.config_resetstat()

    def after() -> None:
        mem["after"] = ctx.used_memory()

    _, seconds, _ = run_producer(
        ctx.mod, ctx.primary, [("call", before), ("enqueue", "noop", range(n)), ("call", after)]
    )
    records = ctx.record_file()
    result = drain(ctx, 1, records, n, range(n), io=False)
    stats = result.pop("commandstats")
    total = sum(stats.values())
    metrics = {
        f"enqueue_{ctx.primary}": n / seconds,
        "drain_1": result["drain"]["rate"],
        "bytes_per_job": (mem["after"] - mem["before"]) / n,
        "cmds_per_job": total / n,
    }
    lag = result.get("ack_lag")
    if lag:
        metrics["ack_lag_p50_ms"] = lag["p50_ms"]
        metrics["ack_lag_p99_ms"] = lag["p99_ms"]
    return {
        "metrics": metrics,
        "detail": {
            "jobs": n,
            "enqueue_seconds": seconds,
            "used_memory": mem,
            "commands_total": total,
            "commands_per_job": {k: round(v / n, 3) for k, v in stats.items()},
            **result,
        },
        "verify": [result["verify"]],
    }


def w_drain2(ctx: Context) -> dict[str, Any]:
    """(a) bulk enqueue where the library has a bulk API, then (b) drain with two processes."""
    n = ctx.jobs
    bulk = ctx.has_bulk()
    (seconds,) = run_producer(
        ctx.mod, ctx.primary, [("bulk" if bulk else "enqueue", "noop", range(n))]
    )
    records = ctx.record_file()
    result = drain(ctx, 2, records, n, range(n), io=False)
    result.pop("commandstats")
    metrics = {"drain_2": result["drain"]["rate"]}
    if bulk:
        metrics["enqueue_bulk"] = n / seconds
    return {
        "metrics": metrics,
        "detail": {
            "jobs": n,
            "enqueue": "bulk" if bulk else "single",
            "enqueue_seconds": seconds,
            **result,
        },
        "verify": [result["verify"]],
    }


def w_slots(ctx: Context) -> dict[str, Any]:
    """Issue 9, item 4: bulk enqueue, then drain with one process at each concurrency of the
    peer's SLOTS_SWEEP (Conveyor: -c 10, 100, 500), to the last ack, with its ack lag."""
    n = ctx.jobs
    metrics: dict[str, float] = {}
    detail: dict[str, Any] = {}
    checks = []
    for slots in ctx.mod.SLOTS_SWEEP:
        run_producer(ctx.mod, ctx.primary, [("bulk", "noop", range(n))])
        records = ctx.record_file()
        result = drain(ctx, 1, records, n, range(n), io=False, slots=slots)
        result.pop("commandstats")
        metrics[f"drain_c{slots}"] = result["drain"]["rate"]
        lag = result.get("ack_lag")
        if lag:
            metrics[f"ack_lag_p99_ms_c{slots}"] = lag["p99_ms"]
        detail[f"c{slots}"] = {"jobs": n, **result}
        checks.append(result["verify"])
    return {"metrics": metrics, "detail": detail, "verify": checks}


def w_payload(ctx: Context) -> dict[str, Any]:
    """Issue 9, item 5: 2 KiB of JSON kwargs per job (a prompt-sized payload): bulk enqueue,
    bytes per queued job, then a drain with one process."""
    n = ctx.jobs
    mem: dict[str, int] = {}

    def before() -> None:
        mem["before"] = ctx.used_memory()

    def after() -> None:
        mem["after"] = ctx.used_memory()

    run_producer(
        ctx.mod, ctx.primary, [("call", before), ("bulk", "payload", range(n)), ("call", after)]
    )
    records = ctx.record_file()
    result = drain(ctx, 1, records, n, range(n), io=False)
    result.pop("commandstats")
    # With Redis' default stream-node-max-bytes (4096) a 2 KiB entry fills a stream node of
    # its own: ~540 B more per job, whoever adds it. Measured again with nodes of 64 KiB,
    # where entries share nodes and what a job costs beyond its payload shows.
    ctx.admin.config_set("stream-node-max-bytes", 65536)
    packed: dict[str, int] = {}
    run_producer(
        ctx.mod,
        ctx.primary,
        [
            ("call", lambda: packed.setdefault("before", ctx.used_memory())),
            ("bulk", "payload", range(n, 2 * n)),
            ("call", lambda: packed.setdefault("after", ctx.used_memory())),
        ],
    )
    metrics = {
        "payload_drain_1": result["drain"]["rate"],
        "payload_bytes_per_job": (mem["after"] - mem["before"]) / n,
        "payload_bytes_per_job_64k_nodes": (packed["after"] - packed["before"]) / n,
    }
    return {
        "metrics": metrics,
        "detail": {
            "jobs": n,
            "payload_json_bytes": 2048,
            "used_memory": mem,
            "used_memory_64k_nodes": packed,
            **result,
        },
        "verify": [result["verify"]],
    }


def w_variants(ctx: Context) -> dict[str, Any]:
    """Enqueue one at a time through the other producer kinds (Conveyor's and the floor's
    asyncio clients), then drain what they queued to check it."""
    metrics: dict[str, float] = {}
    detail: dict[str, Any] = {}
    checks = []
    for kind in list(ctx.mod.PRODUCERS)[1:]:
        n = ctx.jobs
        (seconds,) = run_producer(ctx.mod, kind, [("enqueue", "noop", range(n))])
        metrics[f"enqueue_{kind}"] = n / seconds
        records = ctx.record_file()
        result = drain(ctx, 1, records, n, range(n), io=False)
        result.pop("commandstats")
        detail[kind] = {"jobs": n, "enqueue_seconds": seconds, **result}
        checks.append(result["verify"])
    return {"metrics": metrics, "detail": detail, "verify": checks}


def _roundtrip_ids(ctx: Context) -> list[int]:
    """Ids of the jobs whose enqueue-to-result time is measured (peers that can wait for a
    result: Conveyor), after the enqueue-to-start ones."""
    has = hasattr(ctx.mod.PRODUCERS[ctx.primary], "roundtrip") and ctx.primary == "sync"
    return list(range(LATENCY_JOBS, 2 * LATENCY_JOBS)) if has else []


def _to_result(waits: dict[int, float] | None, prefix: str = "") -> dict[str, float]:
    """p50/p99 of enqueue-to-result times, in ms (nothing when none was measured)."""
    if not waits:
        return {}
    q = statistics.quantiles([w * 1000 for w in waits.values()], n=100, method="inclusive")
    return {f"{prefix}result_latency_p50_ms": q[49], f"{prefix}result_latency_p99_ms": q[98]}


def w_latency(ctx: Context) -> dict[str, Any]:
    """(c) enqueue-to-start with idle workers: 200 jobs 10 ms apart, after a short warm-up."""
    records = ctx.record_file()
    warm = list(range(-LATENCY_WARMUP, 0))
    ids = list(range(LATENCY_JOBS))

    trips = _roundtrip_ids(ctx)

    with WorkerGroup(ctx, 1, False, records.path, "noop-1p") as workers:

        def warmed() -> None:
            records.wait(len(warm), ctx.deadline, workers, "latency warm-up")
            time.sleep(1.0)  # idle: workers are waiting for work when the measured jobs come

        def done() -> None:
            records.wait(len(warm) + len(ids) + len(trips), ctx.deadline, workers, "latency jobs")
            time.sleep(SETTLE_S)

        _, _, stamps, _, waits, _ = run_producer(
            ctx.mod,
            ctx.primary,
            [
                ("enqueue", "noop", warm),
                ("call", warmed),
                ("paced", "noop", ids, LATENCY_GAP_S),
                ("call", lambda: time.sleep(0.2)),  # idle again before the round trips
                ("roundtrip", "noop", trips, LATENCY_GAP_S),
                ("call", done),
            ],
        )
    rows = records.read()
    check = verify(rows, warm + ids + trips)
    starts = {r[0]: r[1] for r in rows}
    lat = sorted((starts[i] - stamps[i]) / 1e6 for i in ids if i in starts)
    q = statistics.quantiles(lat, n=100, method="inclusive")
    return {
        "metrics": {"latency_p50_ms": q[49], "latency_p99_ms": q[98], **_to_result(waits)},
        "detail": {
            "jobs": len(ids),
            "gap_ms": LATENCY_GAP_S * 1000,
            "max_ms": lat[-1],
            "min_ms": lat[0],
            "stop": workers.stop_info,
            "verify": check,
        },
        "verify": [check],
    }


def w_latency_load(ctx: Context) -> dict[str, Any]:
    """Issue 9, item 5: latency (enqueue to start) while a second producer keeps the worker
    about half busy. A calibration drain measures the worker's rate R; then, with one worker
    process running, a background producer bulk-enqueues R/2 jobs a second (every 2 ms) while
    200 measured jobs are enqueued one at a time 10 ms apart, as in the idle latency."""
    calib_n = min(ctx.jobs, 5000)
    run_producer(ctx.mod, ctx.primary, [("bulk", "noop", range(calib_n))])
    calib = drain(ctx, 1, ctx.record_file(), calib_n, range(calib_n), io=False)
    rate = float(calib["drain"]["rate"])
    per_tick = max(1, int(rate / 2 * LOAD_TICK_S))
    records = ctx.record_file()
    warm = list(range(-LATENCY_WARMUP, 0))
    ids = list(range(LATENCY_JOBS))
    trips = _roundtrip_ids(ctx)
    background: list[int] = []
    stop = threading.Event()

    def load() -> None:
        producer = ctx.mod.PRODUCERS["sync"]()
        try:
            t0, tick, next_id = time.perf_counter(), 0, LOAD_FIRST_ID
            while not stop.is_set():
                batch = list(range(next_id, next_id + per_tick))
                producer.enqueue_many("noop", batch)
                background.extend(batch)
                next_id += per_tick
                tick += 1
                delay = t0 + tick * LOAD_TICK_S - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
        finally:
            producer.close()

    with WorkerGroup(ctx, 1, False, records.path, "noop-1p") as workers:
        busy: dict[str, float] = {}

        def warmed() -> None:
            records.wait(len(warm), ctx.deadline, workers, "latency warm-up")
            time.sleep(0.5)
            thread.start()
            time.sleep(0.5)  # the load reaches its steady state before the measured jobs
            busy["cpu0"], busy["t0"] = workers.cpu_seconds(), time.monotonic()

        def done() -> None:
            wall = time.monotonic() - busy["t0"]
            busy["pct"] = 100 * (workers.cpu_seconds() - busy["cpu0"]) / wall
            stop.set()
            thread.join()
            n = len(warm) + len(ids) + len(trips) + len(background)
            records.wait(n, ctx.deadline, workers, "load")
            time.sleep(SETTLE_S)

        thread = threading.Thread(target=load, daemon=True)
        _, _, stamps, waits, _ = run_producer(
            ctx.mod,
            ctx.primary,
            [
                ("enqueue", "noop", warm),
                ("call", warmed),
                ("paced", "noop", ids, LATENCY_GAP_S),
                ("roundtrip", "noop", trips, LATENCY_GAP_S),
                ("call", done),
            ],
        )
    rows = records.read()
    check = verify(rows, warm + ids + trips + background)
    starts = {r[0]: r[1] for r in rows}
    lat = sorted((starts[i] - stamps[i]) / 1e6 for i in ids if i in starts)
    q = statistics.quantiles(lat, n=100, method="inclusive")
    return {
        "metrics": {
            "load_latency_p50_ms": q[49],
            "load_latency_p99_ms": q[98],
            **_to_result(waits, "load_"),
        },
        "detail": {
            "jobs": len(ids),
            "calibration_rate": rate,
            "load_rate": per_tick / LOAD_TICK_S,
            "background_jobs": len(background),
            "worker_cpu_pct": round(busy.get("pct", 0.0), 1),
            "max_ms": lat[-1],
            "stop": workers.stop_info,
            "verify": check,
        },
        "verify": [calib["verify"], check],
    }


def w_io(ctx: Context) -> dict[str, Any]:
    """(f) a 50 ms I/O-bound task (asyncio.sleep, or time.sleep for sync peers), 100 slots."""
    n = ctx.jobs
    bulk = ctx.has_bulk()
    run_producer(ctx.mod, ctx.primary, [("bulk" if bulk else "enqueue", "sleep", range(n))])
    records = ctx.record_file()
    result = drain(ctx, 1, records, n, range(n), io=True)
    result.pop("commandstats")
    return {
        "metrics": {"io_rate": result["drain"]["rate"]},
        "detail": {"jobs": n, "ideal_rate": 100 / 0.05, **result},
        "verify": [result["verify"]],
    }


WORKLOADS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "single": w_single,
    "drain2": w_drain2,
    "variants": w_variants,
    "slots": w_slots,
    "payload": w_payload,
    "latency": w_latency,
    "latency_load": w_latency_load,
    "io": w_io,
}


def versions(dist: str) -> dict[str, str]:
    out = {}
    for name in (dist, "redis", "hiredis"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.driver")
    parser.add_argument("--peer", required=True)
    parser.add_argument("--workload", required=True, choices=sorted(WORKLOADS))
    parser.add_argument("--jobs", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _on_term)
    from bench.peers import PEERS

    spec = PEERS[args.peer]
    os.environ["BENCH_PEER"] = args.peer
    out: dict[str, Any] = {"peer": args.peer, "workload": args.workload, "ok": False}
    t0 = time.monotonic()
    ctx = None
    try:
        mod = importlib.import_module(f"bench.peers.{spec['module']}")
        out["label"] = mod.LABEL
        out["results_stored"] = mod.RESULTS
        out["versions"] = versions(str(spec["dist"]))
        ctx = Context(args, mod)
        out.update(WORKLOADS[args.workload](ctx))
        out["concurrency"] = ctx.concurrency
        bad = [v for v in out.get("verify", []) if not v["ok"]]
        out["ok"] = not bad
        if bad:
            out["verification_failed"] = True
            out["error"] = "exactly-once check failed: " + describe(bad[0])
    except (Exception, _Terminated) as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
        out["traceback"] = traceback.format_exc(limit=8)
    finally:
        out["seconds"] = round(time.monotonic() - t0, 2)
        if ctx is not None:
            out.setdefault("concurrency", ctx.concurrency)
        Path(args.out).write_text(json.dumps(out, indent=1, default=str))
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
