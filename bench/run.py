"""Conveyor side by side with the other Redis task queues, on one machine, one Redis at a time.

    .venv/bin/python bench/run.py --quick      # ~3 min: floors, Conveyor and 3 fast peers, 1 rep
    .venv/bin/python bench/run.py              # ~30 min: every peer, 3 repetitions

What it does (see bench/README.md for the method):
1. Builds one virtualenv per peer under bench/.peers-venv/ (their redis-py pins conflict) and
   installs each peer's latest release from the package index; Conveyor goes into its own one
   (``pip install -e`` of this repo) together with matplotlib and the floor. A peer that fails
   to install is reported as failed, with pip's reason.
2. For each repetition, peer and workload, starts a private redis-server on a free loopback port
   (tests/redis_servers.py: RedisServer), runs bench/driver.py in the peer's virtualenv against it
   with a time limit, then stops that server. Nothing else is touched.
3. Runs redis-benchmark XADD (unpipelined and pipelined) on a private server too.
4. Writes bench/results/latest.json, latest.md (tables, ratios, targets) and latest.png.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))
with contextlib.suppress(ImportError):
    import conveyor  # noqa: F401  (the project venv has it installed)
if "conveyor" not in sys.modules:
    sys.path.insert(0, str(REPO / "src"))

from tests.redis_servers import RedisServer  # noqa: E402

from bench import report  # noqa: E402
from bench.peers import PEERS  # noqa: E402

VENVS = BENCH / ".peers-venv"
RESULTS = BENCH / "results"
ALL_PEERS = ["floor", "floor-noresults", "conveyor", "huey", "dramatiq", "taskiq", "saq"]
ALL_PEERS += ["celery", "arq", "streaq", "rq"]
QUICK_PEERS = ["floor", "floor-noresults", "conveyor", "huey", "taskiq", "dramatiq"]
WORKLOADS = ["single", "drain2", "variants", "slots", "payload", "latency", "latency_load", "io"]
#: Workloads only some peers run: the other producers' enqueue, the concurrency sweep and the
#: 2 KiB payload (Conveyor against the floors with the same payload).
ONLY = {
    "variants": ("conveyor", "floor"),
    "slots": ("conveyor",),
    "payload": ("conveyor", "floor", "floor-noresults"),
    "latency_load": ("conveyor", "floor"),
}

MODES: dict[str, dict[str, Any]] = {
    "quick": {"jobs": 10000, "io_jobs": 1000, "reps": 1, "rb_requests": 20000},
    "full": {"jobs": 20000, "io_jobs": 4000, "reps": 3, "rb_requests": 100000},
}
#: Peers too slow for the full job counts within the time budget: fewer jobs, said in the report.
OVERRIDES: dict[str, dict[str, dict[str, int]]] = {
    "quick": {"rq": {"jobs": 300, "io_jobs": 200}},
    "full": {"rq": {"jobs": 1000, "io_jobs": 500}, "arq": {"jobs": 5000}},
}

T0 = time.monotonic()


def say(msg: str) -> None:
    print(f"[{time.monotonic() - T0:6.0f}s] {msg}", flush=True)


# ----------------------------------------------------------------------------- virtualenvs


def venv_python(venv: str) -> Path:
    return VENVS / venv / "bin" / "python"


def ensure_venv(venv: str, requires: list[str], upgrade: bool) -> str | None:
    """Create/refresh bench/.peers-venv/<venv>; return None or the reason it failed."""
    path = VENVS / venv
    stamp = path / ".bench-requires"
    wanted = json.dumps(requires)
    if not upgrade and stamp.exists() and stamp.read_text() == wanted:
        return None
    log = path.with_suffix(".pip.log")
    VENVS.mkdir(parents=True, exist_ok=True)
    try:
        if not venv_python(venv).exists():
            subprocess.run(
                [sys.executable, "-m", "venv", str(path)],
                check=True,
                capture_output=True,
                timeout=300,
            )
        with open(log, "w") as fh:
            pip = [str(venv_python(venv)), "-m", "pip", "install", "--upgrade", "--quiet"]
            subprocess.run(
                [*pip, "--disable-pip-version-check", *requires],
                check=True,
                stdout=fh,
                stderr=subprocess.STDOUT,
                timeout=900,
            )
    except subprocess.CalledProcessError as exc:
        tail = log.read_text(errors="replace").strip().splitlines()[-8:] if log.exists() else []
        out = exc.stderr.decode(errors="replace") if exc.stderr else ""
        return f"install failed ({' '.join(exc.cmd[-len(requires) :])}): {out}{' | '.join(tail)}"
    except subprocess.TimeoutExpired as exc:
        return f"install timed out after {exc.timeout:.0f}s"
    stamp.write_text(wanted)
    return None


def setup_venvs(peers: list[str], upgrade: bool) -> dict[str, str]:
    """Every venv the peers need; returns {peer: reason} for peers whose venv failed."""
    failed_venvs: dict[str, str] = {}
    needed: dict[str, list[str]] = {"conveyor": []}  # always: the chart runs there
    for peer in [*peers, "conveyor"]:
        spec = PEERS[peer]
        venv = str(spec["venv"])
        reqs = needed.setdefault(venv, [])
        for r in spec["requires"]:  # type: ignore[attr-defined]
            r = str(r).format(repo=REPO)
            if r not in reqs:
                reqs.append(r)
    for venv, reqs in needed.items():
        t = time.monotonic()
        reason = ensure_venv(venv, reqs, upgrade)
        state = f"FAILED: {reason}" if reason else "ok"
        say(f"virtualenv {venv}: {state} ({time.monotonic() - t:.0f}s)")
        if reason:
            failed_venvs[venv] = reason
    return {
        p: failed_venvs[str(PEERS[p]["venv"])] for p in peers if PEERS[p]["venv"] in failed_venvs
    }


# ----------------------------------------------------------------------------- running


def _pgrp_members(pgid: int, token: str) -> list[int]:
    """Pids in process group pgid that carry our run token in their environment."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[2]) != pgid:
                continue
            if f"BENCH_RUN_TOKEN={token}".encode() in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except (OSError, ValueError):
            continue
    return found


def cleanup_groups(workdir: Path, token: str) -> int:
    """SIGKILL leftovers of worker process groups a driver started (only ours: token-checked)."""
    killed = 0
    pgids = workdir / "pgids"
    if not pgids.exists():
        return 0
    for line in pgids.read_text().split():
        for pid in _pgrp_members(int(line), token):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed += 1
    pgids.unlink()
    return killed


def run_driver(
    peer: str, workload: str, jobs: int, timeout: float, workdir: Path, token: str
) -> dict[str, Any]:
    venv = str(PEERS[peer]["venv"])
    out_file = workdir / f"{peer}-{workload}.json"
    out_file.unlink(missing_ok=True)
    log_path = workdir / f"{peer}-{workload}.driver.log"
    env = {
        k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")
    }
    env["PATH"] = f"{VENVS / venv / 'bin'}:{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(REPO)
    env["BENCH_RUN_TOKEN"] = token
    with RedisServer() as server:
        env["BENCH_REDIS_URL"] = server.url
        cmd = [str(venv_python(venv)), "-m", "bench.driver", "--peer", peer, "--workload", workload]
        cmd += ["--jobs", str(jobs), "--out", str(out_file), "--workdir", str(workdir)]
        cmd += ["--timeout", str(timeout)]
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
            timed_out = False
            try:
                proc.wait(timeout=timeout + 30)
            except subprocess.TimeoutExpired:
                timed_out = True
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)  # the driver stops its workers
                try:
                    proc.wait(timeout=STOP_GRACE)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            finally:
                if proc.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                cleanup_groups(workdir, token)
        redis_version = "?"
        with contextlib.suppress(Exception):
            import redis

            client = redis.Redis.from_url(server.url)
            redis_version = client.info("server")["redis_version"]
            client.close()
    if out_file.exists():
        result: dict[str, Any] = json.loads(out_file.read_text())
    else:
        tail = log_path.read_text(errors="replace").splitlines()[-15:] if log_path.exists() else []
        result = {"peer": peer, "workload": workload, "ok": False}
        result["error"] = f"driver wrote no result (exit {proc.returncode})\n" + "\n".join(tail)
    if timed_out:
        result["ok"] = False
        result["error"] = f"timed out after {timeout + 30:.0f}s; " + result.get("error", "")
    result["redis_version"] = redis_version
    return result


STOP_GRACE = 30.0


def redis_benchmark(requests: int) -> dict[str, Any]:
    """redis-benchmark XADD on a private server: unpipelined and pipelined, 1 and 50 clients."""
    binary = shutil.which("redis-benchmark")
    if binary is None:
        return {"ok": False, "error": "redis-benchmark not found on PATH"}
    cases = [
        ("unpipelined, 1 client", 1, 1, requests),
        ("unpipelined, 50 clients", 50, 1, requests),
    ]
    cases += [("pipelined 100, 1 client", 1, 100, requests * 5)]
    cases += [("pipelined 100, 50 clients", 50, 100, requests * 10)]
    out: dict[str, Any] = {"ok": True, "cases": {}}
    for name, clients, pipeline, n in cases:
        with RedisServer() as server:
            cmd = [
                binary,
                "-h",
                "127.0.0.1",
                "-p",
                str(server.port),
                "-n",
                str(n),
                "-c",
                str(clients),
            ]
            cmd += ["-P", str(pipeline), "--csv", "XADD", "bench:stream", "*", "f", "v"]
            try:
                res = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=True)
                row = res.stdout.strip().splitlines()[-1].split('","')
                out["cases"][name] = {"rps": float(row[1]), "p50_ms": float(row[4]), "requests": n}
            except (subprocess.SubprocessError, IndexError, ValueError) as exc:
                out["cases"][name] = {"error": str(exc)}
                out["ok"] = False
    return out


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"cores": os.cpu_count(), "kernel": platform.release()}
    info["python"] = platform.python_version()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["memory_gib"] = round(int(line.split()[1]) / 1024**2, 1)
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        server = shutil.which("redis-server") or "redis-server"
        text = subprocess.run([server, "--version"], capture_output=True, text=True).stdout
        info["redis_server"] = text.strip()
    return info


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="reduced run (~3 min)")
    parser.add_argument("--peers", help="comma-separated subset (default: by mode)")
    parser.add_argument("--workloads", help=f"comma-separated subset of {','.join(WORKLOADS)}")
    parser.add_argument("--reps", type=int, help="repetitions (default: 1 quick, 3 full)")
    parser.add_argument("--jobs", type=int, help="jobs per drain/enqueue measurement")
    parser.add_argument("--upgrade", action="store_true", help="upgrade peers (default in full)")
    parser.add_argument("--no-upgrade", action="store_true", help="reuse installed versions")
    parser.add_argument("--timeout", type=float, help="seconds per driver run (default: by size)")
    parser.add_argument("--keep-work", action="store_true", help="keep logs and record files")
    parser.add_argument("--out", default=str(RESULTS / "latest"), help="output path prefix")
    args = parser.parse_args()

    mode = "quick" if args.quick else "full"
    conf = dict(MODES[mode])
    if args.reps:
        conf["reps"] = args.reps
    if args.jobs:
        conf["jobs"] = args.jobs
    peers = args.peers.split(",") if args.peers else (QUICK_PEERS if args.quick else ALL_PEERS)
    unknown = [p for p in peers if p not in PEERS]
    if unknown:
        parser.error(f"unknown peer(s) {unknown}; known: {', '.join(PEERS)}")
    workloads = args.workloads.split(",") if args.workloads else WORKLOADS
    upgrade = (mode == "full" or args.upgrade) and not args.no_upgrade

    say(f"mode {mode}: peers {', '.join(peers)}; {conf}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    started = time.time()
    load_start = os.getloadavg()
    install_failed = setup_venvs(peers, upgrade)
    workdir = Path(tempfile.mkdtemp(prefix="conveyor-bench-"))
    token = uuid.uuid4().hex
    progress = RESULTS / "progress.tmp"
    progress.write_text("")
    raw: dict[str, Any] = {p: {"runs": {}} for p in peers}
    for p, reason in install_failed.items():
        raw[p]["install_error"] = reason
    rb: list[dict[str, Any]] = []
    try:
        for rep in range(conf["reps"]):
            say(f"repetition {rep + 1}/{conf['reps']}: redis-benchmark")
            rb.append(redis_benchmark(conf["rb_requests"]))
            for peer in peers:
                if peer in install_failed:
                    continue
                over = OVERRIDES[mode].get(peer, {})
                for workload in workloads:
                    if workload in ONLY and peer not in ONLY[workload]:
                        continue
                    key = "io_jobs" if workload == "io" else "jobs"
                    jobs = over.get(key, conf[key])
                    if args.timeout:
                        timeout = args.timeout
                    elif workload in ("latency", "latency_load"):
                        timeout = 90.0
                    else:
                        timeout = 90 + jobs / (20 if peer == "rq" else 100)
                    res = run_driver(peer, workload, jobs, timeout, workdir, token)
                    res["rep"] = rep
                    raw[peer]["runs"].setdefault(workload, []).append(res)
                    with open(progress, "a") as fh:
                        fh.write(json.dumps(res, default=str) + "\n")
                    summary = ", ".join(f"{k}={v:,.1f}" for k, v in res.get("metrics", {}).items())
                    state = (
                        "ok"
                        if res["ok"]
                        else "FAILED " + res.get("error", "").splitlines()[0][:200]
                    )
                    say(
                        f"  {peer:16} {workload:9} rep {rep + 1}: {state} {summary} "
                        f"({res.get('seconds', '?')}s)"
                    )
    finally:
        if args.keep_work:
            say(f"work files kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    info = machine()
    info["load_average_start"] = [round(x, 2) for x in load_start]
    info["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    for p in peers:
        for runs in raw[p]["runs"].values():
            for r in runs:
                if r.get("redis_version", "?") != "?":
                    info["redis_version"] = r["redis_version"]
    doc = {
        "mode": mode,
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started)),
        "duration_s": round(time.time() - started, 1),
        "config": {**conf, "peers": peers, "workloads": workloads, "overrides": OVERRIDES[mode]},
        "machine": info,
        "redis_benchmark": rb,
        "peers": raw,
    }
    doc["summary"] = report.aggregate(doc)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(doc, indent=1, default=str))
    out.with_suffix(".md").write_text(report.markdown(doc))
    chart = out.with_suffix(".png")
    chart_py = venv_python("conveyor")
    res = subprocess.run(
        [str(chart_py), str(BENCH / "chart.py"), str(out.with_suffix(".json")), str(chart)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if res.returncode != 0:
        say(f"chart failed: {res.stderr.strip()[-500:]}")
    progress.unlink(missing_ok=True)
    say(
        f"wrote {out.with_suffix('.json')}, {out.with_suffix('.md')}, {chart} "
        f"in {doc['duration_s']:.0f}s"
    )
    print()
    print(out.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
