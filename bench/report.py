"""Summaries and the Markdown report of a bench run (stdlib only).

python bench/report.py bench/results/latest.json   # rewrite latest.md from the JSON
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

#: metric -> (column title, higher is better)
METRICS: dict[str, tuple[str, bool]] = {
    "enqueue_sync": ("enqueue single (sync)/s", True),
    "enqueue_async": ("enqueue single (async)/s", True),
    "enqueue_bulk": ("enqueue bulk/s", True),
    "drain_1": ("drain 1 process/s", True),
    "drain_2": ("drain 2 processes/s", True),
    "latency_p50_ms": ("latency p50 ms", False),
    "latency_p99_ms": ("latency p99 ms", False),
    "cmds_per_job": ("Redis cmds/job", False),
    "bytes_per_job": ("bytes/queued job", False),
    "io_rate": ("50 ms I/O, 100 slots, jobs/s", True),
}
NONE = "\u2013"  # an en dash for "not measured"
THROUGHPUT = ["enqueue_sync", "enqueue_async", "enqueue_bulk", "drain_1", "drain_2", "io_rate"]
FLOORS = ("floor", "floor-noresults")


def _kind(name: str) -> str:
    return "floor" if name in FLOORS else ("subject" if name == "conveyor" else "peer")


# ----------------------------------------------------------------------------- aggregate


def aggregate(doc: dict[str, Any]) -> dict[str, Any]:
    """Per participant: medians and spreads of every metric over its successful runs."""
    out: dict[str, Any] = {}
    for name, data in doc["peers"].items():
        samples: dict[str, list[float]] = {}
        flagged: set[str] = set()
        failures: list[str] = []
        info: dict[str, Any] = {"kind": _kind(name), "concurrency": {}, "jobs": {}}
        if data.get("install_error"):
            failures.append(f"install: {data['install_error']}")
        runs_ok = runs_total = 0
        for workload, runs in data.get("runs", {}).items():
            for r in runs:
                runs_total += 1
                for key in ("label", "results_stored", "versions"):
                    if r.get(key):
                        info[key] = r[key]
                info["concurrency"].update(r.get("concurrency") or {})
                jobs = (r.get("detail") or {}).get("jobs")
                if jobs:
                    info["jobs"][workload] = jobs
                if not r.get("ok"):
                    reason = (r.get("error") or "failed").strip()
                    failures.append(f"{workload} (rep {r.get('rep', 0) + 1}): {reason}")
                    if not r.get("verification_failed"):
                        continue
                    # It ran to the end but some job ran twice (or never): keep its numbers,
                    # marked, so the table shows them next to the failure.
                    for metric in r.get("metrics") or {}:
                        flagged.add(metric)
                else:
                    runs_ok += 1
                for metric, value in (r.get("metrics") or {}).items():
                    samples.setdefault(metric, []).append(float(value))
                if workload == "single":
                    per_cmd = r["detail"].get("commands_per_job") or {}
                    info.setdefault("commands", []).append(per_cmd)
                if workload in ("single", "drain2"):
                    drained = r["detail"].get("drain") or {}
                    suffix = "drain_1" if workload == "single" else "drain_2"
                    for what in ("redis_cpu", "workers_cpu", "machine_busy"):
                        cpu = drained.get(f"{what}_pct")
                        if cpu is not None:
                            samples.setdefault(f"{what}_{suffix}", []).append(float(cpu))
                    for what in ("redis_cpu_us", "workers_cpu_us"):
                        us = drained.get(f"{what}_per_job")
                        if us is not None:
                            samples.setdefault(f"{what}_{suffix}", []).append(float(us))
        metrics = {}
        for metric, values in samples.items():
            med = statistics.median(values)
            spread = (
                (max(values) - min(values)) / 2 / med * 100 if med and len(values) > 1 else None
            )
            metrics[metric] = {
                "median": med,
                "min": min(values),
                "max": max(values),
                "spread_pct": spread,
                "samples": values,
                "flagged": metric in flagged,
            }
        info["metrics"] = metrics
        info["failures"] = failures
        info["runs_ok"] = runs_ok
        info["runs_total"] = runs_total
        if info.get("commands"):
            info["commands"] = info["commands"][len(info["commands"]) // 2]
        out[name] = info
    return out


def _value(summary: dict[str, Any], name: str, metric: str) -> float | None:
    m = summary.get(name, {}).get("metrics", {}).get(metric)
    return None if m is None else float(m["median"])


def best_peer(summary: dict[str, Any], metric: str) -> tuple[str | None, float | None]:
    higher = METRICS[metric][1]
    best: tuple[str | None, float | None] = (None, None)
    for name, info in summary.items():
        if info["kind"] != "peer":
            continue
        v = _value(summary, name, metric)
        if v is None:
            continue
        if best[1] is None or (v > best[1] if higher else v < best[1]):
            best = (name, v)
    return best


def floor_value(summary: dict[str, Any], metric: str) -> float | None:
    """The floor (with results) for a throughput metric; enqueue has one shared floor."""
    return _value(summary, "floor", metric)


def targets(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 4's targets for Conveyor, each with the measured value and what it needed."""
    c = lambda m: _value(summary, "conveyor", m)  # noqa: E731
    rows: list[dict[str, Any]] = []

    def add(what: str, value: float | None, need: float | None, higher: bool, unit: str) -> None:
        if value is None or need is None:
            rows.append({"target": what, "status": "not measured", "value": value, "need": need})
            return
        met = value >= need if higher else value <= need
        rows.append(
            {
                "target": what,
                "status": "met" if met else "missed",
                "value": value,
                "need": need,
                "unit": unit,
                "by": value / need if need else None,
            }
        )

    peer, best = best_peer(summary, "drain_1")
    add(
        f"drain 1 process >= 10x fastest peer ({peer})",
        c("drain_1"),
        best and 10 * best,
        True,
        "/s",
    )
    f = floor_value(summary, "drain_1")
    add("drain 1 process >= 50% of floor (with results)", c("drain_1"), f and 0.5 * f, True, "/s")
    f = floor_value(summary, "enqueue_sync")
    add("enqueue single sync >= 70% of floor", c("enqueue_sync"), f and 0.7 * f, True, "/s")
    f = floor_value(summary, "enqueue_async")
    add("enqueue single async >= 70% of async floor", c("enqueue_async"), f and 0.7 * f, True, "/s")
    f = floor_value(summary, "enqueue_bulk")
    add("enqueue bulk >= 50% of floor pipelined", c("enqueue_bulk"), f and 0.5 * f, True, "/s")
    add("Redis commands per job <= 3", c("cmds_per_job"), 3.0, False, "")
    add("latency p50 <= 1 ms", c("latency_p50_ms"), 1.0, False, "ms")
    add("latency p99 <= 3 ms", c("latency_p99_ms"), 3.0, False, "ms")
    d1 = c("drain_1")
    add("drain 2 processes >= 1.6x 1 process", c("drain_2"), d1 and 1.6 * d1, True, "/s")
    peer, low = best_peer(summary, "bytes_per_job")
    add(f"bytes per queued job < lowest peer's ({peer})", c("bytes_per_job"), low, False, "B")
    for row in rows:
        if row["status"] == "met" and row["target"].startswith("bytes") and row["value"] == low:
            row["status"] = "missed"
    return rows


def targets9(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 9's targets for Conveyor (items 1, 4, 5 and 6), measured the honest way:
    Conveyor's and the floors' drains to the last ack."""
    c = lambda m: _value(summary, "conveyor", m)  # noqa: E731
    f = lambda m: _value(summary, "floor", m)  # noqa: E731
    rows: list[dict[str, Any]] = []

    def add(what: str, value: float | None, need: float | None, higher: bool, unit: str) -> None:
        status = "not measured" if value is None or need is None else "missed"
        if value is not None and need is not None and (value >= need if higher else value <= need):
            status = "met"
        rows.append({"target": what, "value": value, "need": need, "status": status, "unit": unit})

    for m, what in [("ack_lag_p99_ms", "drain 1 process (-c 10)")] + [
        (f"ack_lag_p99_ms_c{n}", f"-c {n}") for n in (10, 100, 500)
    ]:
        add(f"ack lag p99 <= 20 ms, {what}", c(m), 20.0, False, "ms")
    c10 = c("drain_c10")
    add("drain -c 100 >= 0.9x -c 10", c("drain_c100"), c10 and 0.9 * c10, True, "/s")
    add("drain -c 500 >= 0.8x -c 10", c("drain_c500"), c10 and 0.8 * c10, True, "/s")
    fd = f("drain_1")
    add("drain 1 process >= 0.8x floor (with results)", c("drain_1"), fd and 0.8 * fd, True, "/s")
    peer, best = best_peer(summary, "drain_1")
    need = best and 10 * best
    add(f"drain 1 process >= 10x fastest peer ({peer})", c("drain_1"), need, True, "/s")
    fb = f("enqueue_bulk")
    add("enqueue bulk >= 0.8x floor pipelined", c("enqueue_bulk"), fb and 0.8 * fb, True, "/s")
    # Issue 9 times latency from the enqueue call to job.result() returning (the table's
    # latency column, like every peer's, is enqueue to start).
    for load, what in (("", "idle"), ("load_", "worker ~50% busy")):
        p50, p99 = c(f"{load}result_latency_p50_ms"), c(f"{load}result_latency_p99_ms")
        add(f"enqueue to result() p50 <= 1.5 ms ({what})", p50, 1.5, False, "ms")
        add(f"enqueue to result() p99 <= 5 ms ({what})", p99, 5.0, False, "ms")
    fp = f("payload_drain_1")
    add("2 KiB payload drain >= 0.5x floor", c("payload_drain_1"), fp and 0.5 * fp, True, "/s")
    add(
        "2 KiB payload bytes per queued job <= 2048 + 60 (Redis' default stream nodes)",
        c("payload_bytes_per_job"),
        2108.0,
        False,
        "B",
    )
    add(
        "2 KiB payload bytes per queued job <= 2048 + 60 (stream-node-max-bytes 64 KiB)",
        c("payload_bytes_per_job_64k_nodes"),
        2108.0,
        False,
        "B",
    )
    floor_bytes = f("payload_bytes_per_job")
    add(
        "2 KiB payload bytes per queued job <= the floor's bare entry + 60",
        c("payload_bytes_per_job"),
        floor_bytes and floor_bytes + 60,
        False,
        "B",
    )
    one = [c(f"{w}_cpu_us_drain_1") for w in ("redis", "workers")]
    two = [c(f"{w}_cpu_us_drain_2") for w in ("redis", "workers")]
    per1 = sum(one) if None not in one else None  # type: ignore[arg-type]
    per2 = sum(two) if None not in two else None  # type: ignore[arg-type]
    add("CPU per job, 2 processes <= 1.1x 1 process", per2, per1 and 1.1 * per1, False, "us")
    return rows


# ----------------------------------------------------------------------------- formatting


def fmt(metric: str, v: float | None) -> str:
    if v is None:
        return NONE
    if metric in ("latency_p50_ms", "latency_p99_ms"):
        return f"{v:,.0f}" if v >= 100 else f"{v:.1f}" if v >= 10 else f"{v:.2f}"
    if metric == "cmds_per_job":
        return f"{v:.2f}"
    if metric == "bytes_per_job":
        return f"{v:,.0f}"
    if v >= 10_000:
        return f"{v / 1000:,.0f}k"
    if v >= 1000:
        return f"{v / 1000:.1f}k"
    return f"{v:,.0f}"


def cell(summary: dict[str, Any], name: str, metric: str) -> str:
    m = summary[name]["metrics"].get(metric)
    if m is None:
        return NONE
    text = fmt(metric, m["median"])
    if m.get("spread_pct") is not None:
        text += f" ±{m['spread_pct']:.0f}%"
    if m.get("flagged"):
        text += " †"
    return text


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return NONE
    r = a / b
    return f"{r:.0f}x" if r >= 10 else f"{r:.2f}x" if r >= 0.1 else f"{r:.3f}x"


def order(summary: dict[str, Any]) -> list[str]:
    floors = [n for n in FLOORS if n in summary]
    subject = [n for n in summary if summary[n]["kind"] == "subject"]
    peers = [n for n in summary if summary[n]["kind"] == "peer"]
    peers.sort(key=lambda n: -(_value(summary, n, "drain_1") or -1))
    return floors + subject + peers


def label(summary: dict[str, Any], name: str) -> str:
    info = summary[name]
    text = info.get("label", name)
    version = (info.get("versions") or {}).get
    dist = {"conveyor": "conveyor-queue"}.get(name, name)
    v = version(dist) if version else None
    if v and info["kind"] == "peer":
        text += f" {v}"
    return f"**{text}**" if info["kind"] == "subject" else text


def markdown(doc: dict[str, Any]) -> str:
    s = doc["summary"]
    m = doc["machine"]
    reps = doc["config"]["reps"]
    names = order(s)
    lines = [f"# Conveyor benchmark ({doc['mode']} run, {doc['started']})", ""]
    lines.append(
        f"Machine: {m.get('cpu', '?')}, {m.get('cores', '?')} cores, "
        f"{m.get('memory_gib', '?')} GiB, Linux {m.get('kernel', '?')}, Python {m.get('python')}; "
        f"Redis {m.get('redis_version', '?')} on loopback, a fresh private server per measurement. "
        f"Load average {m.get('load_average_start')} at start, {m.get('load_average_end')} at end. "
        f"Run took {doc['duration_s'] / 60:.1f} min."
    )
    lines.append("")
    jobs = doc["config"]["jobs"]
    io_jobs = doc["config"]["io_jobs"]
    spread = f"medians of {reps} runs, ± is half the min-max spread" if reps > 1 else "1 run each"
    lines.append(
        f"No-op task taking one int; {jobs:,} jobs per enqueue/drain measurement, {io_jobs:,} "
        f"for the 50 ms I/O task, 200 jobs 10 ms apart for latency; {spread}."
    )
    overrides = doc["config"].get("overrides") or {}
    for peer, over in overrides.items():
        if peer in s:
            lines.append(f"{s[peer].get('label', peer)} is too slow for that: {over}.")
    lines.append("")
    cols = ["enqueue_sync", "enqueue_async", "enqueue_bulk", "drain_1", "drain_2"]
    cols += ["latency", "cmds_per_job", "bytes_per_job", "io_rate"]
    head = ["", *[("latency p50 / p99 ms" if c == "latency" else METRICS[c][0]) for c in cols]]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for n in names:
        row = [label(s, n)]
        for c in cols:
            if c == "latency":
                p50, p99 = (_value(s, n, k) for k in ("latency_p50_ms", "latency_p99_ms"))
                row.append(
                    NONE
                    if p50 is None
                    else f"{fmt('latency_p50_ms', p50)} / {fmt('latency_p99_ms', p99)}"
                )
            else:
                row.append(cell(s, n, c))
        lines.append("| " + " | ".join(row) + " |")
    if any(m.get("flagged") for n in names for m in s[n]["metrics"].values()):
        lines.append("")
        lines.append(
            "† from a run that failed the exactly-once check: some job ran twice or never "
            "(see Failures)."
        )
    lines.append("")
    lines.append(
        "Enqueue is one call per job from one producer, through each library's own client "
        "(sync or asyncio, whichever it has; Conveyor and the floor have both); bulk is the "
        "library's bulk API where it has one. Drains start workers on a queue already holding "
        "the jobs and are timed by the tasks' own clocks, from the moment every worker process "
        "has booted and holds its first job (a start gate: see bench/README.md). Conveyor's "
        "and the floors' drains end at the last ack (their consumer group has no lag and an "
        "empty pending list: nothing a crash could run again); the other peers' drains end "
        "at the last job's end, as their queues keep no pending list to read."
    )
    lines.append("")

    lines.append("## Throughput ratios")
    lines.append("")
    lines.append("Against the floor (plain redis-py with results) and the fastest peer per column.")
    lines.append("")
    tcols = ["enqueue_sync", "enqueue_async", "enqueue_bulk", "drain_1", "drain_2", "io_rate"]
    lines.append("| | " + " | ".join(f"{METRICS[c][0]} vs floor" for c in tcols) + " |")
    lines.append("|" + "---|" * (len(tcols) + 1))
    for n in names:
        row = [label(s, n)]
        for c in tcols:
            v = _value(s, n, c)
            f = floor_value(s, c)
            if c.startswith("enqueue_") and c != "enqueue_bulk" and v is not None and f is None:
                f = floor_value(s, "enqueue_sync")
            row.append(ratio(v, f))
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines.append(
        "| metric | Conveyor | fastest peer | Conveyor / fastest peer | Conveyor / floor |"
    )
    lines.append("|---|---|---|---|---|")
    for metric, (title, _higher) in METRICS.items():
        cv = _value(s, "conveyor", metric) if "conveyor" in s else None
        peer, best = best_peer(s, metric)
        fv = floor_value(s, metric)
        best_txt = f"{fmt(metric, best)} ({s[peer].get('label', peer)})" if peer else NONE
        lines.append(
            f"| {title} | {fmt(metric, cv)} | {best_txt} | {ratio(cv, best)} | {ratio(cv, fv)} |"
        )
    lines.append("")

    if "conveyor" in s:
        lines.append("## Issue 4 targets for Conveyor")
        lines.append("")
        lines.append("| target | measured | needed | status |")
        lines.append("|---|---|---|---|")
        for t in targets(s):
            value = NONE if t["value"] is None else f"{t['value']:,.2f}{t.get('unit', '')}"
            need = NONE if t["need"] is None else f"{t['need']:,.2f}{t.get('unit', '')}"
            status = t["status"]
            if t["status"] == "missed" and t.get("by"):
                status += f" ({t['by']:.2f}x of the bound)"
            lines.append(f"| {t['target']} | {value} | {need} | {status} |")
        lines.append("")

    if "conveyor" in s:
        lines.extend(issue9(s))

    lines.append("## redis-benchmark XADD on the same machine (private server)")
    lines.append("")
    rbs = [r for r in doc.get("redis_benchmark", []) if r.get("cases")]
    if rbs:
        lines.append("| case | requests/s (median) | p50 ms |")
        lines.append("|---|---|---|")
        for case in rbs[0]["cases"]:
            vals = [r["cases"][case] for r in rbs if "rps" in r["cases"].get(case, {})]
            if vals:
                rps = statistics.median(v["rps"] for v in vals)
                p50 = statistics.median(v["p50_ms"] for v in vals)
                lines.append(f"| {case} | {fmt('drain_1', rps)} | {p50:.3f} |")
            else:
                lines.append(f"| {case} | failed: {rbs[0]['cases'][case].get('error')} | |")
    else:
        errors = {r.get("error") for r in doc.get("redis_benchmark", [])}
        lines.append(f"Not measured: {', '.join(str(e) for e in errors) or 'not run'}.")
    lines.append("")

    lines.append("## Participants: versions and settings")
    lines.append("")
    lines.append("| | version | redis-py / hiredis | results stored | worker settings | runs ok |")
    lines.append("|---|---|---|---|---|---|")
    for n in names:
        info = s[n]
        vers = info.get("versions") or {}
        dist = [k for k in vers if k not in ("redis", "hiredis")]
        v = vers.get(dist[0]) if dist else f"redis-py {vers.get('redis', '?')}"
        rp = f"{vers.get('redis', '?')} / {vers.get('hiredis', '?')}"
        conc = info.get("concurrency") or {}
        settings = "; ".join(f"{k}: {v}" for k, v in sorted(conc.items()))
        lines.append(
            f"| {label(s, n)} | {v} | {rp} | {info.get('results_stored', '?')} | {settings} | "
            f"{info['runs_ok']}/{info['runs_total']} |"
        )
    lines.append("")

    cores = doc.get("machine", {}).get("cores", "?")
    lines.append("## CPU during the drains")
    lines.append("")
    lines.append(
        "CPU time over each drain's wall time, in % of one core: redis-server's (INFO cpu), the "
        "worker processes' (every process in their process groups, from /proc) and the whole "
        f"machine's ({cores} cores, from /proc/stat; {cores}00% is every core busy). Redis near "
        "100% means Redis itself is the limit; the machine near its total means the cores are, "
        "and a second worker process then only takes CPU from the first and from Redis."
    )
    lines.append("")
    lines.append(
        "| | drain 1 process/s | Redis | workers | machine | drain 2 processes/s | Redis "
        "| workers | machine | 2p / 1p |"
    )
    lines.append("|---|---|---|---|---|---|---|---|---|---|")
    for n in names:
        d1, d2 = _value(s, n, "drain_1"), _value(s, n, "drain_2")
        pct = lambda v: NONE if v is None else f"{v:.0f}%"  # noqa: E731
        cells = []
        for suffix in ("drain_1", "drain_2"):
            cells.append(
                " | ".join(
                    pct(_value(s, n, f"{what}_{suffix}"))
                    for what in ("redis_cpu", "workers_cpu", "machine_busy")
                )
            )
        lines.append(
            f"| {label(s, n)} | {fmt('drain_1', d1)} | {cells[0]} | {fmt('drain_2', d2)} | "
            f"{cells[1]} | {ratio(d2, d1)} |"
        )
    lines.append("")

    lines.append("## Redis commands per job (enqueue one at a time + drain with one process)")
    lines.append("")
    for n in names:
        cmds = s[n].get("commands")
        if cmds:
            top = ", ".join(f"{k} {v:.2f}" for k, v in list(cmds.items())[:8])
            lines.append(f"- {label(s, n)}: {top}")
    lines.append("")
    lines.append(
        "Counted by INFO commandstats after CONFIG RESETSTAT on the private server, so commands "
        "run inside Lua scripts count too; it includes the workers' own start-up and idle "
        "polling while the drain ran. The check that each job ran exactly once writes to a "
        "local file, not Redis, so it adds no command."
    )
    lines.append("")

    failed = [(n, f) for n in names for f in s[n]["failures"]]
    lines.append("## Failures")
    lines.append("")
    if not failed:
        lines.append(
            "None: every run of every participant finished and verified each job ran exactly once."
        )
    for n, f in failed:
        first = f.strip().splitlines()
        lines.append(f"- {label(s, n)}: {first[0][:400]}")
    lines.append("")
    return "\n".join(lines)


def issue9(s: dict[str, Any]) -> list[str]:
    """The concurrency sweep, the ack lag, CPU per job and issue 9's targets."""
    lines = ["## Acks and concurrency (Conveyor, issue 9)", ""]
    lines.append(
        "One worker process draining a bulk-enqueued backlog at each concurrency, timed from the "
        "start gate to the last ack (the group has no lag and nothing pending). Ack lag: from "
        "the end of a job's function to the reply of the script that stored its record and "
        "acked it, measured inside the worker (every job, a log-spaced histogram, so values are "
        "bucket edges, at most 9% high) and handed to the bench through $CONVEYOR_ACK_LAG_FILE."
    )
    lines.append("")
    lines.append("| concurrency | drain/s | vs -c 10 | ack lag p99 ms |")
    lines.append("|---|---|---|---|")
    c10 = _value(s, "conveyor", "drain_c10")
    for n in (10, 100, 500):
        d = _value(s, "conveyor", f"drain_c{n}")
        lag = _value(s, "conveyor", f"ack_lag_p99_ms_c{n}")
        lag_txt = NONE if lag is None else f"{lag:.1f}"
        lines.append(f"| -c {n} | {fmt('drain_1', d)} | {ratio(d, c10)} | {lag_txt} |")
    p50, p99 = (_value(s, "conveyor", f"ack_lag_{q}_ms") for q in ("p50", "p99"))
    if p99 is not None:
        lines.append("")
        lines.append(
            f"Ack lag of the 1-process drain (-c 10, the 'drain 1 process' column): "
            f"p50 {p50:.1f} ms, p99 {p99:.1f} ms."
        )
    lines.append("")
    lines.append("2 KiB of JSON kwargs per job (bulk enqueue, then one process):")
    lines.append("")
    lines.append("| | drain/s | bytes per queued job | the same, stream-node-max-bytes 64 KiB |")
    lines.append("|---|---|---|---|")
    for n in order(s):
        d = _value(s, n, "payload_drain_1")
        b = _value(s, n, "payload_bytes_per_job")
        b64 = _value(s, n, "payload_bytes_per_job_64k_nodes")
        if d is not None or b is not None:
            lines.append(
                f"| {label(s, n)} | {fmt('drain_1', d)} | {fmt('bytes_per_job', b)} "
                f"| {fmt('bytes_per_job', b64)} |"
            )
    lines.append("")
    lines.append(
        "With Redis' default stream-node-max-bytes (4096) a 2 KiB entry takes a stream node of "
        "its own, ~540 B more per job whoever adds it; with 64 KiB nodes entries share them."
    )
    lines.append("")
    lines.append("CPU microseconds per job in the drains (Redis from INFO, workers from /proc):")
    lines.append("")
    lines.append("| | Redis, 1 process | workers, 1 process | Redis, 2 processes | workers, 2 |")
    lines.append("|---|---|---|---|---|")
    for n in order(s):
        vals = [
            _value(s, n, f"{w}_cpu_us_{d}")
            for d in ("drain_1", "drain_2")
            for w in ("redis", "workers")
        ]
        if any(v is not None for v in vals):
            cells = " | ".join(NONE if v is None else f"{v:.1f}" for v in vals)
            lines.append(f"| {label(s, n)} | {cells} |")
    lines.append("")
    lines.append("### Issue 9 targets")
    lines.append("")
    lines.append("| target | measured | needed | status |")
    lines.append("|---|---|---|---|")
    for t in targets9(s):
        value = NONE if t["value"] is None else f"{t['value']:,.2f}{t.get('unit', '')}"
        need = NONE if t["need"] is None else f"{t['need']:,.2f}{t.get('unit', '')}"
        lines.append(f"| {t['target']} | {value} | {need} | {t['status']} |")
    lines.append("")
    return lines


if __name__ == "__main__":
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "bench/results/latest.json")
    doc = json.loads(path.read_text())
    doc["summary"] = aggregate(doc)
    path.with_suffix(".md").write_text(markdown(doc))
    print(path.with_suffix(".md").read_text())
