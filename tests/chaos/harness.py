"""The chaos harness: a private redis-server, worker processes and a producer per scenario.

Everything a scenario starts lives in its own directory (Redis data and log, ledgers, worker
logs). Processes are only ever signalled by the pid of a ``Popen`` this harness made, and every
one of them is gone when the scenario's ``Run`` context exits.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from conveyor import EnqueueRejected, PayloadError
from conveyor.broker import ClientOptions
from conveyor.errors import ConnectionFailed
from conveyor.keys import GROUP, LEVELS, QueueKeys
from tests.redis_servers import RedisServer

from . import tasks
from .ledger import PRODUCER_FILE, count_dones

ROOT = Path(__file__).resolve().parents[2]


def log(msg: str) -> None:
    """Progress lines on stderr (pytest shows them for failed tests, the CLI live)."""
    print(f"[chaos {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- worker processes


class WorkerProc:
    """One worker process we started; addressed by its pid only."""

    def __init__(
        self, index: int, cmd: list[str], log_path: Path, env: dict[str, str] | None = None
    ) -> None:
        self.index = index
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in reap()
        self.proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"},
            # Own session: a Ctrl-C on the harness must not hit workers mid-scenario; the
            # harness stops them itself, by pid.
            start_new_session=True,
        )
        self.pid = self.proc.pid
        self.started_at = time.time()
        self.killed_at: float | None = None  # SIGKILL sent by the harness
        self.termed_at: float | None = None  # SIGTERM sent by the harness
        self.stopped_in_time: bool | None = None
        self.exited_at: float | None = None
        self._waiter = threading.Thread(target=self._wait, daemon=True, name=f"wait-{self.pid}")
        self._waiter.start()

    def _wait(self) -> None:
        self.proc.wait()
        self.exited_at = time.time()

    def alive(self) -> bool:
        return self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    def text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def ready(self) -> bool:
        return "READY " in self.text()

    def signal(self, sig: int) -> bool:
        """Send sig to our child if it is still running (never to a reaped pid)."""
        if self.proc.poll() is not None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, sig)
            return True
        return False

    def reap(self) -> None:
        with contextlib.suppress(Exception):
            self._log.close()


class Fleet:
    """The worker processes of one scenario."""

    def __init__(
        self,
        url: str,
        ledger_dir: Path,
        log_dir: Path,
        env: dict[str, str] | None = None,
        **options: Any,
    ) -> None:
        self.url = url
        self.env = env or {}
        self.ledger_dir = ledger_dir
        self.log_dir = log_dir
        self.options = options
        self.procs: list[WorkerProc] = []
        self.kills: list[tuple[float, int]] = []  # (time, pid) of harness SIGKILLs
        self._lock = threading.Lock()

    def spawn(self, count: int = 1, **overrides: Any) -> list[WorkerProc]:
        opts = {**self.options, **overrides}
        made = []
        for _ in range(count):
            cmd = [sys.executable, "-m", "tests.chaos.worker", "--url", self.url]
            cmd += ["--ledger-dir", str(self.ledger_dir)]
            for name, value in opts.items():
                flag = f"--{name.replace('_', '-')}"
                if value is True:
                    cmd.append(flag)
                elif value is not False and value is not None:
                    cmd += [flag, str(value)]
            with self._lock:
                index = len(self.procs)
                p = WorkerProc(index, cmd, self.log_dir / f"worker-{index:03d}.log", self.env)
                self.procs.append(p)
            made.append(p)
        return made

    def alive(self) -> list[WorkerProc]:
        return [p for p in self.procs if p.alive()]

    def wait_ready(self, procs: Sequence[WorkerProc], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        for p in procs:
            while not p.ready():
                if not p.alive():
                    raise RuntimeError(f"worker pid {p.pid} exited before READY:\n{p.text()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"worker pid {p.pid} not READY in {timeout}s:\n{p.text()}")
                time.sleep(0.05)

    def sigkill(self, p: WorkerProc) -> bool:
        if p.signal(signal.SIGKILL):
            p.killed_at = time.time()
            self.kills.append((p.killed_at, p.pid))
            p.proc.wait()
            return True
        return False

    def kill_random(self, rng: random.Random) -> WorkerProc | None:
        candidates = self.alive()
        if not candidates:
            return None
        victim = rng.choice(candidates)
        return victim if self.sigkill(victim) else None

    def sigterm(self, p: WorkerProc) -> bool:
        if p.signal(signal.SIGTERM):
            p.termed_at = time.time()
            return True
        return False

    def keep(self, n: int) -> list[WorkerProc]:
        """Start workers until n are alive (replacing ones that died)."""
        missing = n - len(self.alive())
        return self.spawn(missing) if missing > 0 else []

    def stop_all(self, grace: float) -> list[WorkerProc]:
        """SIGTERM every live worker; SIGKILL any still running after grace. Returns those."""
        alive = self.alive()
        for p in alive:
            self.sigterm(p)
        deadline = time.monotonic() + grace
        late = []
        for p in alive:
            left = max(0.0, deadline - time.monotonic())
            try:
                p.proc.wait(left)
                p.stopped_in_time = True
            except subprocess.TimeoutExpired:
                p.stopped_in_time = False
                late.append(p)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGKILL)
                p.proc.wait()
        return late

    def close(self) -> None:
        """Kill whatever we started that still runs (by pid), and close log files."""
        for p in self.procs:
            if p.alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGKILL)
                with contextlib.suppress(Exception):
                    p.proc.wait(10)
            p.reap()

    def error_lines(self) -> list[str]:
        """Lines of worker logs that show a worker-internal failure (not a task's failure)."""
        bad = []
        for p in self.procs:
            for line in p.text().splitlines():
                if "internal error" in line or "Traceback (most recent call last)" in line:
                    bad.append(f"pid {p.pid}: {line.strip()[:200]}")
        return bad


# --------------------------------------------------------------------------- producer


def classify(exc: BaseException) -> str:
    """'failed' when the enqueue certainly did not happen, else 'unknown'."""
    if isinstance(exc, EnqueueRejected | PayloadError):
        return "failed"
    cause = exc.__cause__ if isinstance(exc, ConnectionFailed) else exc
    if isinstance(cause, redis.BusyLoadingError):
        return "failed"  # the server refused it while loading its data
    if isinstance(cause, redis.ConnectionError) and "connecting to" in str(cause):
        return "failed"  # never connected, so nothing was sent
    if isinstance(cause, redis.ResponseError):
        return "failed"  # an error reply: the command was not applied
    return "unknown"


class Producer:
    """Enqueues chaos jobs, numbering them and recording each outcome in producer.ledger.

    Its client does not retry on its own (``retries=0``): a retried XADD whose first reply
    was lost would enqueue the job twice, and the ledger could not say which attempt landed.
    """

    def __init__(self, url: str, ledger_dir: Path, *, retries: int = 0, timeout: float = 5.0):
        opts = ClientOptions(
            retries=retries, socket_timeout=timeout, connect_timeout=2.0, health_check_interval=0
        )
        self.app = tasks.chaos_app(url, client_options=opts, max_payload_bytes=8 << 20)
        self.raw = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=2.0, retry_on_timeout=False
        )
        self.keys: QueueKeys = self.app.keys(tasks.QUEUE)
        self._file = open(ledger_dir / PRODUCER_FILE, "a", encoding="utf-8")  # noqa: SIM115
        self._lock = threading.Lock()
        self._next = 0
        self.status: dict[int, str] = {}
        self.kind: dict[int, str] = {}  # seq -> what the scenario made it (good, raise, ...)
        self.retried_enqueues = 0  # attempts that failed or timed out before a definite answer
        self.found_existing = 0  # retries that found their first attempt had landed

    def seqs(self, n: int) -> list[int]:
        with self._lock:
            first = self._next
            self._next += n
        return list(range(first, first + n))

    def _record(self, seq: int, status: str, job_id: str | None, error: str = "") -> None:
        line = f"ENQ {seq} {status} {job_id or '-'} {time.time():.6f} {error}".rstrip()
        with self._lock:
            self.status[seq] = status
            self._file.write(line.replace("\n", " ") + "\n")
            self._file.flush()

    def enqueue(self, task: str, *args: Any, kind: str = "good") -> tuple[int, str]:
        (seq,) = self.seqs(1)
        self.kind[seq] = kind
        try:
            job = self.app.get_task(task).enqueue(seq, *args)
        except Exception as exc:
            status = classify(exc)
            self._record(seq, status, None, f"{type(exc).__name__}: {exc}"[:300])
            return seq, status
        self._record(seq, "ok", job.id)
        return seq, "ok"

    def enqueue_unique(
        self, task: str, *args: Any, kind: str = "good", give_up: float = 120.0
    ) -> tuple[int, str]:
        """Enqueue with a unique key, retrying through failures and unknown outcomes with the
        same key until Redis answers (the safe way to retry an enqueue after a timeout)."""
        (seq,) = self.seqs(1)
        self.kind[seq] = kind
        routed = self.app.get_task(task).using(unique_key=f"chaos-{seq}")
        deadline = time.monotonic() + give_up
        outcomes: list[str] = []
        delay = 0.05
        while True:
            try:
                job = routed.enqueue(seq, *args)
            except Exception as exc:
                outcomes.append(classify(exc))
                if time.monotonic() > deadline:
                    final = "unknown" if "unknown" in outcomes else "failed"
                    self._record(seq, final, None, f"{type(exc).__name__}: {exc}"[:300])
                    return seq, final
                time.sleep(random.uniform(0, delay))  # full jitter, like Conveyor's clients
                delay = min(delay * 2, 2.0)
                continue
            self.retried_enqueues += len(outcomes)
            if not job.created:
                self.found_existing += 1
            self._record(seq, "ok", job.id)
            return seq, "ok"

    def enqueue_many(self, items: Sequence[tuple[str, tuple[Any, ...], str]]) -> list[int]:
        """One pipeline: items are (task name, args after seq, kind)."""
        seqs = self.seqs(len(items))
        sigs = []
        for seq, (task, args, kind) in zip(seqs, items, strict=True):
            self.kind[seq] = kind
            sigs.append(self.app.get_task(task).s(seq, *args))
        try:
            jobs = self.app.enqueue_many(sigs)
        except Exception as exc:
            status = classify(exc)
            for seq in seqs:
                self._record(seq, status, None, f"{type(exc).__name__}: {exc}"[:300])
            return seqs
        for seq, job in zip(seqs, jobs, strict=True):
            self._record(seq, "ok", job.id)
        return seqs

    def xadd_raw(
        self,
        make_fields: Callable[[int], dict[str, Any]],
        *,
        kind: str,
        level: str = "normal",
        maxlen: int | None = None,
    ) -> int:
        """XADD an entry written by hand (malformed jobs, or plain MAXLEN trimming).

        ``make_fields(seq)`` builds the entry; a ``chaos_seq`` field is added so that the
        checker can name the job even when its other fields are garbage.
        """
        (seq,) = self.seqs(1)
        self.kind[seq] = kind
        fields = {**make_fields(seq), "chaos_seq": seq}
        try:
            entry = self.raw.xadd(self.keys.stream(level), fields, maxlen=maxlen, approximate=False)
        except Exception as exc:
            self._record(seq, classify(exc), None, f"{type(exc).__name__}: {exc}"[:300])
            return seq
        entry_id = entry.decode() if isinstance(entry, bytes) else str(entry)
        self._record(seq, "ok", f"{tasks.QUEUE}:{level[0]}:{entry_id}")
        return seq

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._file.flush()
            os.fsync(self._file.fileno())
        self._file.close()
        self.app.close()
        self.raw.close()


# --------------------------------------------------------------------------- Redis inspection


@dataclass
class DeadEntry:
    entry_id: str
    seq: int | None
    job_id: str | None
    reason: str
    deliveries: int
    attempt: int | None
    history: int
    task: str | None
    worker: str
    dead_at_ms: int


def _s(v: Any) -> str:
    return v.decode("utf-8", errors="replace") if isinstance(v, bytes) else str(v)


def parse_dead(entry_id: bytes | str, fields: dict[bytes, bytes]) -> DeadEntry:
    seq: int | None = None
    if b"chaos_seq" in fields:
        seq = int(fields[b"chaos_seq"])
    else:
        raw = fields.get(b"args", b"")
        if 0 < len(raw) < 10_000:
            with contextlib.suppress(ValueError, TypeError, IndexError):
                seq = int(json.loads(raw)[0])
    history = 0
    if b"dead_history" in fields:  # every attempt; the entry's own history is one short
        with contextlib.suppress(ValueError):
            history = len(json.loads(fields[b"dead_history"]))
    attempt = None
    with contextlib.suppress(KeyError, ValueError):
        attempt = int(fields[b"attempt"])
    return DeadEntry(
        entry_id=_s(entry_id),
        seq=seq,
        job_id=_s(fields[b"id"]) if b"id" in fields else None,
        reason=_s(fields.get(b"dead_reason", b"")),
        deliveries=int(fields.get(b"dead_deliveries", b"0") or 0),
        attempt=attempt,
        history=history,
        task=_s(fields[b"task"]) if b"task" in fields else None,
        worker=_s(fields.get(b"dead_worker", b"")),
        dead_at_ms=int(fields.get(b"dead_at", b"0") or 0),
    )


class DeadReader:
    """Reads the dead-letter stream incrementally (it is only ever appended to here)."""

    def __init__(self, client: redis.Redis, keys: QueueKeys) -> None:
        self.client = client
        self.key = keys.dead
        self.last = "-"
        self.entries: list[DeadEntry] = []

    def poll(self) -> list[DeadEntry]:
        while True:
            start = self.last if self.last == "-" else f"({self.last}"
            batch = self.client.xrange(self.key, start, "+", count=200)
            if not batch:
                return self.entries
            for entry_id, fields in batch:
                self.entries.append(parse_dead(entry_id, fields))
                self.last = _s(entry_id)


@dataclass
class QueueState:
    """What is still in Redis for the queue: the residual once a scenario has drained."""

    pending: int = 0
    undelivered: int = 0
    delayed: int = 0
    lengths: dict[str, int] = field(default_factory=dict)
    dead: int = 0

    @property
    def residual(self) -> int:
        return self.pending + self.undelivered + self.delayed


def _info_value(info: dict[Any, Any], name: str) -> Any:
    return info.get(name, info.get(name.encode()))


def queue_state(client: redis.Redis, keys: QueueKeys) -> QueueState:
    """Pending and undelivered from XINFO GROUPS / XRANGE, delayed from ZCARD."""
    st = QueueState()
    for level in LEVELS:
        stream = keys.stream(level)
        length = int(client.xlen(stream))
        st.lengths[level] = length
        if not length and not client.exists(stream):
            continue
        groups = [g for g in client.xinfo_groups(stream) if _s(_info_value(g, "name")) == GROUP]
        if not groups:
            st.undelivered += length
            continue
        g = groups[0]
        st.pending += int(_info_value(g, "pending"))
        lag = _info_value(g, "lag")
        if lag is not None:
            st.undelivered += int(lag)
        else:  # lag unknown (entries deleted after the group's position): count by hand
            last = _s(_info_value(g, "last-delivered-id"))
            start = f"({last}"
            while True:
                batch = client.xrange(stream, start, "+", count=5000)
                st.undelivered += len(batch)
                if len(batch) < 5000:
                    break
                start = f"({_s(batch[-1][0])}"
    st.delayed = int(client.zcard(keys.delayed))
    st.dead = int(client.xlen(keys.dead))
    return st


# --------------------------------------------------------------------------- one scenario run


class Run:
    """The world of one scenario: its directory, redis-server, workers and producer."""

    def __init__(self, name: str, base: Path, *, keep: bool = False) -> None:
        self.name = name
        self.dir = base / name
        shutil.rmtree(self.dir, ignore_errors=True)
        self.ledger_dir = self.dir / "ledger"
        self.log_dir = self.dir / "logs"
        self.ledger_dir.mkdir(parents=True)
        self.log_dir.mkdir(parents=True)
        self.keep = keep
        self.redis: RedisServer | None = None
        self.fleets: list[Fleet] = []
        self.producers: list[Producer] = []
        self._clients: list[redis.Redis] = []
        self.cleanups: list[Callable[[], None]] = []
        self.keys = QueueKeys(tasks.NAMESPACE, tasks.QUEUE)
        self.passed = False

    # -- resources -------------------------------------------------------------------------
    def start_redis(
        self, *, appendonly: bool = False, appendfsync: str = "everysec", extra: Sequence[str] = ()
    ) -> RedisServer:
        self.redis = RedisServer(
            appendonly=appendonly,
            appendfsync=appendfsync,
            extra_args=list(extra),
            dir=str(self.dir / "redis"),
        ).start()
        return self.redis

    @property
    def url(self) -> str:
        assert self.redis is not None, "start_redis() first"
        return self.redis.url

    def client(self) -> redis.Redis:
        c = redis.Redis.from_url(self.url, socket_timeout=10, socket_connect_timeout=2)
        self._clients.append(c)
        return c

    def fleet(
        self, env: dict[str, str] | None = None, url: str | None = None, **options: Any
    ) -> Fleet:
        f = Fleet(url or self.url, self.ledger_dir, self.log_dir, env, **options)
        self.fleets.append(f)
        return f

    def producer(self, url: str | None = None, **kwargs: Any) -> Producer:
        p = Producer(url or self.url, self.ledger_dir, **kwargs)
        self.producers.append(p)
        return p

    # -- waiting -----------------------------------------------------------------------------
    def drain(
        self,
        *,
        want_done: set[int],
        want_dead: set[int],
        timeout: float,
        quiet: float = 3.0,
        tick: Callable[[], None] | None = None,
    ) -> tuple[float, bool]:
        """Wait until every wanted outcome is seen and nothing is left in the queue.

        Returns (seconds waited, settled). Gives up early when the queue is empty and no new
        outcome has appeared for ``quiet`` seconds (the case of the negative controls, where
        jobs are gone for good), or at ``timeout``.
        """
        client = self.client()
        dead = DeadReader(client, self.keys)
        t0 = time.monotonic()
        last_progress, last_seen = t0, -1
        while True:
            if tick is not None:
                tick()
            done = count_dones(self.ledger_dir)
            try:
                dead_seqs = {e.seq for e in dead.poll()}
                residual = queue_state(client, self.keys).residual
            except redis.RedisError:
                dead_seqs, residual = set(), -1
            seen = len(done) + len(dead_seqs)
            now = time.monotonic()
            if seen != last_seen:
                last_seen, last_progress = seen, now
            if want_done <= done and want_dead <= dead_seqs and residual == 0:
                return now - t0, True
            if residual == 0 and now - last_progress > quiet:
                return now - t0, False
            if now - t0 > timeout:
                return now - t0, False
            time.sleep(0.25)

    # -- teardown ----------------------------------------------------------------------------
    def close(self) -> None:
        for fn in reversed(self.cleanups):
            with contextlib.suppress(Exception):
                fn()
        for p in self.producers:
            with contextlib.suppress(Exception):
                p.close()
        for f in self.fleets:
            f.close()
        for c in self._clients:
            with contextlib.suppress(Exception):
                c.close()
        if self.redis is not None:
            self.redis.stop()
        if self.passed and not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def scenario_run(name: str, base: Path, *, keep: bool = False) -> Iterator[Run]:
    run = Run(name, base, keep=keep)
    try:
        yield run
    finally:
        run.close()


def paced(total_seconds: float, n: int) -> Iterator[int]:
    """Yield 0..n-1 spread evenly over total_seconds (sleeping between)."""
    t0 = time.monotonic()
    for i in range(n):
        due = t0 + total_seconds * i / max(n, 1)
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        yield i


class Background(threading.Thread):
    """A thread whose exception is re-raised by join_or_raise()."""

    def __init__(self, target: Callable[[], None], name: str) -> None:
        super().__init__(name=name, daemon=True)
        self._fn = target
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._fn()
        except BaseException as exc:
            self.error = exc

    def join_or_raise(self, timeout: float | None = None) -> None:
        self.join(timeout)
        if self.is_alive():
            raise RuntimeError(f"{self.name} did not finish in {timeout}s")
        if self.error is not None:
            raise self.error
