"""Worker instructions per job (valgrind callgrind), for comparing revisions on a busy machine.

Wall-clock drains on these machines vary 3-4x from one hour to the next; callgrind counts
the instructions the worker process executes, which do not depend on what else runs. Each
revision drains N1 and then N2 no-op jobs (pre-filled, so only the drain is counted) against
a private redis-server; (instructions(N2) - instructions(N1)) / (N2 - N1) is the cost of one
more job, start-up and imports cancelled out. Under callgrind the worker runs ~50x slower, so
every fetch returns a full batch: the figure is the cost per job of a saturated worker.

    .venv/bin/python bench/instructions.py 860a388 HEAD          # git revisions
    .venv/bin/python bench/instructions.py --jobs 500 2500 HEAD  # the defaults
    .venv/bin/python bench/instructions.py --payload 2048 e3c632e HEAD  # 2 KiB kwargs
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.redis_servers import RedisServer  # noqa: E402

DRAIN = """
import asyncio, sys
from conveyor import Conveyor, WorkerSettings
from conveyor.worker import Worker

url, jobs, mode, payload = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
app = Conveyor(url, namespace="instructions")

if payload < 0:
    @app.task
    async def nothing() -> None:
        return None
else:
    @app.task
    async def nothing(x: int, prompt: str = "") -> None:
        return None

async def drain() -> None:
    worker = Worker(app, WorkerSettings(concurrency=50))
    run = asyncio.create_task(worker.run())
    while worker.counts.get("done", 0) < jobs:
        await asyncio.sleep(0.01)
    worker.stop()
    await run

if mode == "fill":
    if payload < 0:  # a task without parameters
        nothing.enqueue_many([() for _ in range(jobs)])
    else:  # x by position, a prompt by name when asked (its default otherwise)
        kwargs = {"prompt": "a" * payload} if payload else {}
        nothing.enqueue_many([nothing.s(i, **kwargs) for i in range(jobs)])
else:
    asyncio.run(drain())
app.close()
"""


CALLGRIND = ("valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null")


def instructions(src: Path, url: str, jobs: int, payload: int) -> int:
    """Instructions of one drain of ``jobs`` jobs by the code under ``src``."""
    env = {"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"}
    subprocess.run(["redis-cli", "-u", url, "FLUSHALL"], check=True, capture_output=True)
    subprocess.run(
        [sys.executable, "-c", DRAIN, url, str(jobs), "fill", str(payload)], env=env, check=True
    )
    out = subprocess.run(
        [*CALLGRIND, sys.executable, "-c", DRAIN, url, str(jobs), "drain", str(payload)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    found = re.search(r"Collected : (\d+)", out.stderr)
    if found is None:
        raise SystemExit(f"no callgrind total in:\n{out.stderr[-2000:]}")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("revisions", nargs="+", help="git revisions (HEAD: the work tree)")
    parser.add_argument("--jobs", type=int, nargs=2, default=(500, 2500))
    parser.add_argument(
        "--payload",
        type=int,
        default=-1,
        help="the task takes (x, prompt='') and jobs pass x and BYTES of prompt by name "
        "(0: x alone, the prompt left to its default); default: a task without parameters",
    )
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    low, high = args.jobs
    with tempfile.TemporaryDirectory() as tmp, RedisServer() as server:
        for rev in args.revisions:
            if rev == "HEAD":
                src = ROOT / "src"
            else:
                tree = Path(tmp) / rev
                subprocess.run(
                    ["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(tree), rev],
                    check=True,
                )
                src = tree / "src"
            try:
                a = instructions(src, server.url, low, args.payload)
                b = instructions(src, server.url, high, args.payload)
            finally:
                if rev != "HEAD":
                    subprocess.run(
                        ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(src.parent)],
                        check=False,
                    )
            print(f"{rev}: {(b - a) // (high - low):,} instructions per job ({a:,} / {b:,})")


if __name__ == "__main__":
    main()
