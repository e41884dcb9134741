"""The checker: what went in must come out (Jepsen's queue checker, for a task queue).

Inputs are the producer's ledger (every enqueue, ok / failed / unknown), the workers' ledgers
(START/DONE lines, fsynced before the ack) and, after the drain, the dead-letter stream and the
queue's residual as Redis reports it (XINFO GROUPS pending and lag, the delayed set).

Per scenario:

- attempted: enqueues tried; acknowledged: those Redis acknowledged (``ok``);
- lost: acknowledged jobs whose expected end (a DONE line, or a dead-letter entry for jobs
  meant to die) never appeared;
- unexpected: ends of jobs never enqueued, of enqueues that certainly failed, or the wrong end
  (a DONE for a job meant to die);
- duplicates: ends beyond the first (extra DONE lines, extra dead entries);
- residual: pending + undelivered + delayed jobs left after the drain.

A scenario passes when lost, unexpected and residual are 0, duplicates are within what the
scenario allows, and its own checks hold. Negative controls must FAIL.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from .harness import DeadEntry, QueueState
from .ledger import Enqueue, WorkerLedgers


@dataclass
class Result:
    key: str
    title: str
    control: bool = False
    attempted: int = 0
    acknowledged: int = 0
    failed: int = 0
    unknown: int = 0
    lost: int = 0
    unexpected: int = 0
    duplicates: int = 0
    residual: int = 0
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    directory: str = ""

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def as_expected(self) -> bool:
        """A scenario must pass; a negative control must fail (the checker saw the loss)."""
        return self.passed != self.control

    @property
    def verdict(self) -> str:
        if self.control:
            return "FAIL (control: detected)" if not self.passed else "PASS (control NOT detected)"
        return "pass" if self.passed else "FAIL"

    def fail(self, message: str) -> None:
        self.failures.append(message)

    def note(self, message: str) -> None:
        self.notes.append(message)

    def report(self) -> str:
        lines = [f"{self.key}: {self.title} -> {self.verdict} ({self.seconds:.1f}s)"]
        lines += [f"    failure: {f}" for f in self.failures]
        lines += [f"    note: {n}" for n in self.notes]
        if self.directory:
            lines.append(f"    files: {self.directory}")
        return "\n".join(lines)


def dead_by_seq(entries: Iterable[DeadEntry]) -> dict[int, list[DeadEntry]]:
    out: dict[int, list[DeadEntry]] = defaultdict(list)
    for e in entries:
        if e.seq is not None:
            out[e.seq].append(e)
    return out


def tally(
    result: Result,
    enqueues: dict[int, Enqueue],
    ledgers: WorkerLedgers,
    dead: list[DeadEntry],
    state: QueueState | None,
    *,
    expect: Callable[[int], str] = lambda seq: "done",
    allowed_duplicates: int = 0,
    allowed_lost: int = 0,
) -> Result:
    """Fill the standard columns of result and record the standard failures.

    ``expect(seq)`` says how job seq must end: ``"done"`` or ``"dead"``. ``allowed_lost`` is
    for scenarios where some loss is the documented behaviour (AOF everysec), measured.
    """
    result.attempted = len(enqueues)
    ok = {s for s, e in enqueues.items() if e.status == "ok"}
    failed = {s for s, e in enqueues.items() if e.status == "failed"}
    result.acknowledged = len(ok)
    result.failed = len(failed)
    result.unknown = sum(1 for e in enqueues.values() if e.status == "unknown")
    dones = ledgers.dones
    deads = dead_by_seq(dead)

    lost: list[int] = []
    dead_instead: list[int] = []
    for seq in sorted(ok):
        if expect(seq) == "done":
            if not dones.get(seq):
                lost.append(seq)
                if deads.get(seq):
                    dead_instead.append(seq)
        elif not deads.get(seq):
            lost.append(seq)
    result.lost = len(lost)

    ended = set(dones) | set(deads)
    never = sorted(s for s in ended if s not in enqueues)
    refused = sorted(s for s in ended if s in failed)
    wrong = sorted(s for s in dones if s in enqueues and expect(s) != "done")
    unnamed = sum(1 for e in dead if e.seq is None)
    result.unexpected = len(never) + len(refused) + len(wrong) + unnamed

    extra = {s: len(v) - 1 for s, v in dones.items() if len(v) > 1}
    extra_dead = {s: len(v) - 1 for s, v in deads.items() if len(v) > 1}
    both = [s for s in dones if s in deads]
    result.duplicates = sum(extra.values()) + sum(extra_dead.values()) + len(both)

    if state is None:
        result.residual = -1
        result.fail("could not read the queue's residual from Redis")
    else:
        result.residual = state.residual
        if state.residual:
            result.fail(
                f"residual {state.residual} after the drain (pending {state.pending}, "
                f"undelivered {state.undelivered}, delayed {state.delayed})"
            )
    if len(lost) > allowed_lost:
        why = f"; {len(dead_instead)} of them dead-lettered instead" if dead_instead else ""
        result.fail(
            f"lost {len(lost)} acknowledged job(s) (allowed {allowed_lost}), "
            f"e.g. seq {_sample(lost)}{why}"
        )
    if never or refused or wrong or unnamed:
        result.fail(
            f"unexpected ends: {len(never)} never enqueued {_sample(never)}, {len(refused)} "
            f"whose enqueue failed {_sample(refused)}, {len(wrong)} DONE but meant to die "
            f"{_sample(wrong)}, {unnamed} dead entries without a seq"
        )
    if result.duplicates > allowed_duplicates:
        result.fail(
            f"{result.duplicates} duplicate end(s) (allowed {allowed_duplicates}): extra DONE "
            f"for seq {_sample(sorted(extra))}, extra dead {_sample(sorted(extra_dead))}, "
            f"done and dead {_sample(both)}"
        )
    if ledgers.bad_lines:
        result.fail(f"{ledgers.bad_lines} unreadable ledger line(s)")
    return result


def trace_duplicates(ledgers: WorkerLedgers, killed_pids: set[int]) -> list[str]:
    """Each duplicate DONE must come from a worker the harness killed (its ack never landed).

    For a job with k DONE lines, at most one may come from a worker that was not killed.
    """
    problems = []
    for seq, items in ledgers.dones.items():
        if len(items) < 2:
            continue
        survivors = [d.pid for d in items if d.pid not in killed_pids]
        if len(survivors) > 1:
            problems.append(
                f"seq {seq} DONE {len(items)} times by pids {[d.pid for d in items]}, "
                f"{len(survivors)} of them never killed"
            )
    return problems


def _sample(items: list[int], n: int = 5) -> str:
    if not items:
        return "[]"
    head = ", ".join(str(i) for i in items[:n])
    return f"[{head}{', ...' if len(items) > n else ''}]"


HEADER = (
    "scenario",
    "attempted",
    "acked",
    "lost",
    "unexpected",
    "dups",
    "residual",
    "time",
    "result",
)


def table(results: list[Result]) -> str:
    rows = [HEADER]
    for r in results:
        rows.append(
            (
                f"{r.key} {r.title}",
                str(r.attempted),
                str(r.acknowledged),
                str(r.lost),
                str(r.unexpected),
                str(r.duplicates),
                str(r.residual),
                f"{r.seconds:.0f}s",
                r.verdict,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    out = []
    for n, row in enumerate(rows):
        cells = [
            row[i].ljust(widths[i]) if i == 0 or i == len(row) - 1 else row[i].rjust(widths[i])
            for i in range(len(row))
        ]
        out.append("  ".join(cells).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)
