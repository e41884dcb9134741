"""How a benchmark task proves it ran: one line appended to a local file per execution.

Each line is ``job_number start_ns end_ns pid ppid``. The harness reads the file to check that
every job ran exactly once and to time drains and latency from the tasks' own clocks. A local
file (O_APPEND, one write(2) per line, well under PIPE_BUF so lines never interleave) keeps the
check out of Redis entirely: it adds no command to INFO commandstats, no key to used_memory and
no round trip to the job, so every peer and the floor pay the same few microseconds.

Drains start their workers on a queue that already holds every job; so that worker processes
which boot at different speeds all start together, the first task a process runs waits at a
gate (BENCH_GATE): it registers its process and waits until the harness opens the gate, once
every worker process has arrived. The drain is timed from that moment; later tasks only test a
module-level flag. Sync tasks wait with time.sleep (blocking only their thread or process);
async tasks use ``await abegin()``, which leaves their event loop running, since a loop blocked
between a library's fetch and its bookkeeping can make it redeliver jobs (SAQ's sweep re-queues
fetched jobs whose status is not yet "active"): the gate must not cause what it measures.
"""

from __future__ import annotations

import asyncio
import os
import time

_fd: int | None = None
_gate_open = False

#: The "payload" task's keyword arguments: a prompt-sized string, 2,048 bytes as JSON
#: (``{"prompt": "aaa..."}``), the same for every peer that runs the payload workload.
PAYLOAD = {"prompt": "a" * 2034}


def begin() -> int:
    """First thing in a sync task: passes the start gate, returns the start time (ns)."""
    if not _gate_open:
        _wait_at_gate()
    return time.time_ns()


async def abegin() -> int:
    """First thing in an async task: the same, without blocking the event loop."""
    if not _gate_open:
        await _await_gate()
    return time.time_ns()


def _arrive() -> str | None:
    """Register this process at the gate; the gate's path, or None when it is open."""
    global _gate_open
    gate = os.environ.get("BENCH_GATE")
    if not gate or os.path.exists(gate):
        _gate_open = True
        return None
    who = os.getppid() if os.environ.get("BENCH_WORKER_ID") == "ppid" else os.getpid()
    fd = os.open(gate + ".ready", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, b"%d\n" % who)
    os.close(fd)
    return gate


def _wait_at_gate() -> None:
    global _gate_open
    gate = _arrive()
    while gate and not os.path.exists(gate):
        time.sleep(0.001)
    _gate_open = True


async def _await_gate() -> None:
    global _gate_open
    gate = _arrive()
    # Polls a file the harness creates (another process): no event to wait on, and a stat is
    # cheap next to the millisecond sleep.
    while gate and not os.path.exists(gate):  # noqa: ASYNC110, ASYNC240
        await asyncio.sleep(0.001)
    _gate_open = True


def record(i: int, start_ns: int) -> None:
    """Append this execution of job ``i`` (started at ``start_ns``, from begin()) to the file
    named by BENCH_RECORD. Opened lazily in the process that runs the task."""
    global _fd
    if _fd is None:
        _fd = os.open(os.environ["BENCH_RECORD"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(_fd, b"%d %d %d %d %d\n" % (i, start_ns, time.time_ns(), os.getpid(), os.getppid()))


def slots(default: int) -> int:
    """Concurrent job slots per worker process asked for by the harness (BENCH_SLOTS)."""
    return int(os.environ.get("BENCH_SLOTS") or default)


def url() -> str:
    return os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
