"""Starting the example's processes (uvicorn, stage workers) and reading SSE as a browser
does: shared by ``python -m examples.ai_pipeline`` and tests/test_ai_pipeline.py."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import httpx

#: Where ``examples.`` imports from.
ROOT = Path(__file__).resolve().parents[2]
TASKS = "examples.ai_pipeline.tasks:app"
API = "examples.ai_pipeline.app:api"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _start(args: list[str], env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    # A session of its own: a kill reaches the worker and any process it started.
    return subprocess.Popen([sys.executable, *args], cwd=ROOT, env={**env}, start_new_session=True)


def worker(
    queues: Iterable[str], env: Mapping[str, str], *, concurrency: int = 8, lease: float = 2.0
) -> subprocess.Popen[bytes]:
    """``conveyor worker`` for some stage queues. A short lease, so that the jobs of a worker
    killed mid-run are taken over within seconds (the default is 30 s)."""
    args = ["-m", "conveyor", "--log-level", "WARNING", "worker", TASKS]
    args += ["-q", ",".join(queues), "-c", str(concurrency), "--lease", str(lease)]
    return _start(args, env)


def server(port: int, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    """``uvicorn examples.ai_pipeline.app:api`` on loopback."""
    args = ["-m", "uvicorn", API, "--host", "127.0.0.1", "--port", str(port)]
    return _start([*args, "--log-level", "warning"], env)


def wait_until_serving(url: str, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode} before serving")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer within {timeout} s")
        time.sleep(0.1)


def kill(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL: no clean-up, no ack, as when a machine or a container dies."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(10)


def stop(process: subprocess.Popen[bytes], grace: float = 15.0) -> None:
    """SIGTERM (a worker finishes its running jobs), SIGKILL if it does not exit in time."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        kill(process)


def sse_messages(lines: Iterable[str]) -> Iterator[tuple[str, str, str | None]]:
    """(event, data, id) per Server-Sent Events message; comments (keep-alives) skipped."""
    event, data, event_id = "message", [], None
    for line in lines:
        if not line:
            if data:
                yield event, "\n".join(data), event_id
            event, data, event_id = "message", [], None
        elif not line.startswith(":"):
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                event = value
            elif field == "data":
                data.append(value)
            elif field == "id":
                event_id = value
