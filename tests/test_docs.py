"""The documentation's code runs against a real Redis, so the site cannot teach what fails.

Every ```python block of docs/**/*.md runs as its own process (as a reader would run it),
like the README's. A MyST comment line right above a block says how, when it is not a plain
script:

- ``% test: skip REASON``: not run (a fragment that needs a Cluster, Sentinel or a module of
  the reader's own); the reason is required.
- ``% test: pytest``: the block is a test module; pytest runs it.
- ``% test: module NAME.py``: written as NAME.py and run as a script; the ``conveyor ...``
  commands of the page's side-by-side table then run against that module.

Namespaces a block names (``namespace="..."``) are deleted before and after it runs.

The migration guides are checked call by call: every Python call of a table's Conveyor
column appears in the page's module block (which runs), and every ``conveyor`` command of
that column runs against a real Redis with the module (a worker until it has registered,
then SIGTERM, or a burst worker's own exit 0).

The runs start together, PARALLEL at a time (they mostly wait on workers and due times), and
each test waits for its own. The site itself is built by ``make docs`` with warnings as
errors; ``make test`` runs it before pytest.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from conveyor import Conveyor
from conveyor.stats import live_workers

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
TIMEOUT = 60
#: doc runs at once (each a Python process, mostly waiting on a worker or a due time)
PARALLEL = 3
MIGRATION_PAGES = ("guides/from-celery.md", "guides/from-rq.md")

BLOCK = re.compile(
    r"^(?:% test: (?P<kind>\S+) ?(?P<arg>[^\n]*)\n)?```python\n(?P<code>.*?)\n```$", re.S | re.M
)
LITERAL_NAMESPACE = re.compile(r'namespace="([^"]+)"')
ANY_NAMESPACE = re.compile(r'namespace=f?"')
CODE_SPAN = re.compile(r"`([^`]+)`")
JOB_ID = re.compile(r"\b[A-Za-z0-9_.-]+:[hnld]:[0-9a-f-]+\b")


@dataclass(frozen=True)
class Block:
    page: str
    index: int
    kind: str  # "run", "skip", "pytest" or "module"
    arg: str
    code: str

    @property
    def id(self) -> str:
        return f"{self.page}#{self.index}-{self.kind}"


def _blocks() -> list[Block]:
    out = []
    for path in sorted(DOCS.rglob("*.md")):
        page = path.relative_to(DOCS).as_posix()
        if page.startswith("_build/"):
            continue
        text = path.read_text(encoding="utf-8")
        for i, m in enumerate(BLOCK.finditer(text)):
            out.append(Block(page, i, m["kind"] or "run", (m["arg"] or "").strip(), m["code"]))
    return out


BLOCKS = _blocks()
RUNNABLE = [b for b in BLOCKS if b.kind != "skip"]
#: module blocks run in the migration test, before the table's commands use them
SCRIPTS = [b for b in RUNNABLE if b.kind != "module"]


def _delete(r: redis.Redis, namespace: str) -> None:
    keys = list(r.scan_iter(match=f"{namespace}:*", count=1000))
    for i in range(0, len(keys), 500):
        r.delete(*keys[i : i + 500])


def _env(redis_url: str) -> dict[str, str]:
    return {**os.environ, "CONVEYOR_REDIS_URL": redis_url, "PYTHONUNBUFFERED": "1"}


def _run(args: list[str], cwd: Path, redis_url: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [sys.executable, *args],
            cwd=cwd,
            env=_env(redis_url),
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"{' '.join(args)} did not finish within {TIMEOUT} s") from exc


def _report(code: str, proc: subprocess.CompletedProcess[str]) -> str:
    return f"--- code ---\n{code}\n--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"


def _run_block(block: Block, cwd: Path, redis_url: str) -> subprocess.CompletedProcess[str]:
    if block.kind == "pytest":
        script = cwd / "test_doc_block.py"
        script.write_text(block.code + "\n", encoding="utf-8")
        args = ["-m", "pytest", "-q", "-p", "no:cacheprovider", f"--rootdir={cwd}"]
        # plugins of this project's dev install that a reader's block does not use; loading
        # them (hypothesis above all) costs more CPU than the block's tests
        args += ["-p", "no:hypothesispytest", "-p", "no:django", "-p", "no:anyio"]
        args += ["-o", "asyncio_mode=auto", "-o", "asyncio_default_fixture_loop_scope=function"]
        return _run([*args, script.name], cwd, redis_url)
    name = block.arg if block.kind == "module" else f"doc_block_{block.index}.py"
    (cwd / name).write_text(block.code + "\n", encoding="utf-8")
    return _run([name], cwd, redis_url)


# -- the blocks ---------------------------------------------------------------------------------
def test_docs_have_runnable_blocks_and_say_why_others_do_not_run() -> None:
    assert len(RUNNABLE) >= 10, "the docs lost their runnable examples"
    for b in BLOCKS:
        assert b.kind in ("run", "skip", "pytest", "module"), f"{b.id}: unknown marker {b.kind}"
        if b.kind == "skip":
            assert b.arg, f"{b.id}: `% test: skip` needs a reason"
        if b.kind == "module":
            assert re.fullmatch(r"[a-z_]+\.py", b.arg), f"{b.id}: `% test: module NAME.py`"
    assert {b.page for b in RUNNABLE} >= {"quickstart.md", *MIGRATION_PAGES}
    assert [b.page for b in RUNNABLE if b.kind == "module"] == sorted(MIGRATION_PAGES)


@pytest.fixture(scope="session")
def doc_runs(
    request: pytest.FixtureRequest, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Future[None]]]:
    """Every doc run this session selected, started at once, at most PARALLEL at a time.

    Most of a block's time is spent waiting (a worker starting and stopping, a delay coming
    due), so running them side by side keeps the whole file within its budget; each test
    still fails on its own, with its own output.
    """
    wanted: dict[str, Block | str] = {}  # one run each: two runs of a page would share keys
    for item in request.session.items:
        params = getattr(item, "callspec", None)
        if params is not None and "doc_runs" in getattr(item, "fixturenames", ()):
            for one in params.params.values():
                wanted[one.id if isinstance(one, Block) else one] = one
    client = redis.Redis.from_url(redis_url)
    with ThreadPoolExecutor(PARALLEL) as pool:
        runs: dict[str, Future[None]] = {}
        # the longest first (a page's module and commands, the pytest block), so the short
        # ones fill in beside them
        order = sorted(wanted.values(), key=_longest_first)
        for i, one in enumerate(order):
            cwd = tmp_path_factory.mktemp(f"doc-run-{i}")
            if isinstance(one, Block):
                runs[one.id] = pool.submit(_check_block, one, cwd, redis_url, client)
            else:
                runs[one] = pool.submit(_check_commands, one, cwd, redis_url, client)
        yield runs
        for run in runs.values():
            run.cancel()
    client.close()


def _longest_first(one: Block | str) -> int:
    """0 for a migration page's run (a module, then its commands), 0 for a pytest block
    (pytest's own start-up), 1 for a plain script."""
    return int(isinstance(one, Block) and one.kind != "pytest")


@pytest.mark.parametrize("block", SCRIPTS, ids=lambda b: b.id)
def test_doc_code_block_runs(block: Block, doc_runs: dict[str, Future[None]]) -> None:
    doc_runs[block.id].result(timeout=3 * TIMEOUT)


def _check_block(block: Block, cwd: Path, redis_url: str, r: redis.Redis) -> None:
    if "Conveyor(" in block.code:
        assert ANY_NAMESPACE.search(block.code), (
            f"{block.id}: a block that makes an app must name its namespace, so it can be cleaned"
        )
    namespaces = LITERAL_NAMESPACE.findall(block.code)
    for ns in namespaces:
        _delete(r, ns)
    try:
        proc = _run_block(block, cwd, redis_url)
        assert proc.returncode == 0, f"{block.id} exited with {proc.returncode}\n" + _report(
            block.code, proc
        )
    finally:
        for ns in namespaces:
            _delete(r, ns)


# -- the migration tables -----------------------------------------------------------------------
def _conveyor_column(page: str) -> list[list[str]]:
    """The code spans of each row's Conveyor cell in the page's side-by-side table."""
    rows: list[list[str]] = []
    column: int | None = None
    header = True
    for line in (DOCS / page).read_text(encoding="utf-8").splitlines():
        if not line.startswith("|"):
            if rows:
                break  # the first table with a Conveyor column is the one
            header = True
            continue
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if header:
            header = False
            column = cells.index("Conveyor") if "Conveyor" in cells else None
        elif column is not None and not set(line) <= set("|- "):
            # a table cell writes `|` as `\|`; the code it stands for has a plain `|`
            rows.append([span.replace("\\|", "|") for span in CODE_SPAN.findall(cells[column])])
    return rows


def _module(page: str) -> Block:
    [module] = [b for b in BLOCKS if b.page == page and b.kind == "module"]
    return module


def _squeeze(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("page", MIGRATION_PAGES)
def test_migration_table_python_calls_are_in_the_page_module(page: str) -> None:
    rows = _conveyor_column(page)
    assert len(rows) >= 20, f"{page}: the side-by-side table is missing or lost rows"
    code = _squeeze(_module(page).code)
    calls = [span for row in rows for span in row if not span.startswith("conveyor ")]
    assert len(calls) >= 15
    missing = [c for c in calls if _squeeze(c) not in code]
    assert not missing, f"{page}: calls of the table that its tasks.py does not run: {missing}"


@pytest.mark.parametrize("page", MIGRATION_PAGES)
def test_migration_table_commands_run_against_the_page_module(
    page: str, doc_runs: dict[str, Future[None]]
) -> None:
    doc_runs[page].result(timeout=3 * TIMEOUT)


#: Runs in the page's directory as one process: the module as a script (the table's Python
#: calls), then each command through the real click group against the real Redis, the
#: job id printed by `conveyor enqueue` standing in for JOB_ID. One process, not one per
#: command, keeps the Python start-ups (most of the cost) few.
DRIVER = """
import json, re, runpy, sys
from click.testing import CliRunner
from conveyor.cli import main

runpy.run_path(sys.argv[1], run_name="__main__")
job_id, results = None, []
for args in json.loads(sys.argv[2]):
    args = [job_id if a == "JOB_ID" and job_id else a for a in args]
    result = CliRunner().invoke(main, args)
    results.append({"args": args, "exit_code": result.exit_code, "output": result.output})
    found = re.search(sys.argv[3], result.output) if args[0] == "enqueue" else None
    job_id = found.group(0) if found else job_id
print("RESULTS " + json.dumps(results))
"""


def _check_commands(page: str, tmp_path: Path, redis_url: str, r: redis.Redis) -> None:
    module = _module(page)
    [namespace] = LITERAL_NAMESPACE.findall(module.code)
    commands = [s for row in _conveyor_column(page) for s in row if s.startswith("conveyor ")]
    workers = [shlex.split(c)[1:] for c in commands if c.startswith("conveyor worker ")]
    others = [shlex.split(c)[1:] for c in commands if not c.startswith("conveyor worker ")]
    assert workers and others, f"{page}: the table has no worker or no other command"
    others.sort(key=lambda words: words[0] != "enqueue")  # its job id stands in for JOB_ID
    (tmp_path / module.arg).write_text(module.code + "\n", encoding="utf-8")
    _delete(r, namespace)
    try:
        args = ["-c", DRIVER, module.arg, json.dumps(others), JOB_ID.pattern]
        proc = _run(args, tmp_path, redis_url)
        assert proc.returncode == 0, f"{module.id} exited {proc.returncode}\n" + _report(
            module.code, proc
        )
        [line] = [x for x in proc.stdout.splitlines() if x.startswith("RESULTS ")]
        for result in json.loads(line.removeprefix("RESULTS ")):
            command = shlex.join(["conveyor", *result["args"]])
            assert "JOB_ID" not in result["args"], f"{page}: no job id for {command!r}"
            assert result["exit_code"] == 0, f"{command!r}: {result['output']}"
        _run_workers(workers, tmp_path, redis_url, namespace)
    finally:
        _delete(r, namespace)


def _run_workers(commands: list[list[str]], cwd: Path, redis_url: str, namespace: str) -> None:
    """Start the commands' workers together, wait until each registered (a burst worker may
    end by itself instead, with 0), then stop them as Kubernetes would: SIGTERM, exit 0."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "conveyor", *words],
            cwd=cwd,
            env=_env(redis_url),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for words in commands
    ]
    app = Conveyor(redis_url, namespace=namespace)
    try:
        deadline = time.monotonic() + 45
        while True:
            running = [p for p in procs if p.poll() is None]
            ended = [p for p in procs if p.poll() is not None]
            if not running or len(live_workers(app)) >= len(running):
                break
            assert time.monotonic() < deadline, "workers did not all register within 45 s"
            time.sleep(0.1)
        for p in running:
            p.send_signal(signal.SIGTERM)
        for words, p in zip(commands, procs, strict=True):
            out = p.communicate(timeout=45)[0]
            command = shlex.join(["conveyor", *words])
            if p in ended:
                assert "--burst" in words, f"{command!r} ended before SIGTERM\n{out}"
            assert p.returncode == 0, f"{command!r} exited {p.returncode}\n{out}"
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        app.close()
