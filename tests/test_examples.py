"""The examples and the README's code run end to end against a real Redis, so neither can rot.

Every ``examples/*.py`` runs as its own process (as a reader would run it), in a namespace
the test chooses through EXAMPLE_NAMESPACE, and must exit 0, print its success line and
leave no key behind. README blocks marked ``<!-- test: run -->`` run the same way.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from conveyor import Conveyor
from conveyor.worker.loader import load_app

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
README = ROOT / "README.md"
TIMEOUT = 60

#: The line each example prints when the outcome it demonstrates really happened.
EXPECTED = {
    "api_endpoint": "queued over HTTP, answered at once, result served",
    "cpu_bound": "CPU work ran in subprocesses; the stuck one was killed",
    "crash_recovery": "killed job recovered, poison job bounded",
    "delayed_jobs": "every delayed job ran once, on time",
    "fastapi_app": "FastAPI queued at once, worker ran it, status served",
    "flask_app": "Flask task ran in its app context, result served",
    "flow_control": "cancelled, limited, expired, reported and de-duplicated",
    "interop_redis_cli": "plain XADD job ran; bad entries dead-lettered",
    "micro_batches": "batched, one result per job, poison isolated",
    "pipeline": "every document went through 4 stages",
    "priorities": "high drained first",
    "queue_stats": "stats match the queue's state",
    "retries_and_dead_letters": "retried, dead-lettered and replayed as expected",
    "safe_trimming": "no unfinished job trimmed; history bounded",
    "scaling_out": "each job ran once, spread over 3 processes",
    "streaming": "tokens streamed live, after the end and over SSE",
    "tasks_and_worker": "all 3 jobs done, results read back",
    "workflows": "chains, a chord and a resumed chain ran as expected",
}

#: Examples that are packages (``examples/<name>/``), run with ``python -m examples.<name>``,
#: with the line they print on success and the module holding their worker app.
PACKAGES = {
    "ai_pipeline": (
        "every document went through 4 stage queues; summary streamed over SSE; "
        "the killed stage lost nothing",
        "examples.ai_pipeline.tasks:app",
    ),
}

RUN_MARKER = re.compile(r"<!--\s*test:\s*run\s*-->\s*\n```python\n(.*?)\n```", re.S)


def _keys(r: redis.Redis, namespace: str) -> list[bytes]:
    return list(r.scan_iter(match=f"{namespace}:*", count=1000))


def _delete(r: redis.Redis, namespace: str) -> None:
    keys = _keys(r, namespace)
    for i in range(0, len(keys), 500):
        r.delete(*keys[i : i + 500])


def _run(
    args: list[str], redis_url: str, cwd: Path, **env: str
) -> subprocess.CompletedProcess[str]:
    environment = {
        **os.environ,
        "CONVEYOR_REDIS_URL": redis_url,
        "PYTHONUNBUFFERED": "1",
        **env,
    }
    try:
        return subprocess.run(
            [sys.executable, *args],
            cwd=cwd,
            env=environment,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(
            f"{' '.join(args)} did not finish within {TIMEOUT} s\n"
            f"--- stdout ---\n{_text(exc.stdout)}\n--- stderr ---\n{_text(exc.stderr)}"
        ) from None


def _text(output: str | bytes | None) -> str:
    """TimeoutExpired carries bytes even when the run asked for text."""
    return output.decode(errors="replace") if isinstance(output, bytes) else output or ""


@pytest.fixture
def example_namespace(r: redis.Redis) -> Iterator[str]:
    ns = f"test-example-{secrets.token_hex(4)}"
    yield ns
    _delete(r, ns)


def test_every_example_has_an_expected_outcome() -> None:
    found = {p.stem for p in EXAMPLES.glob("*.py")}
    assert found == set(EXPECTED), "add new examples to EXPECTED (and remove deleted ones)"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_imports_as_a_worker_app_without_running(name: str) -> None:
    """`conveyor worker examples.<name>:app` must find an app with tasks, and import only."""
    app = load_app(f"examples.{name}:app")
    assert isinstance(app, Conveyor)
    assert app.tasks, f"examples/{name}.py registers no task"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs_to_its_expected_outcome_and_cleans_up(
    name: str, redis_url: str, r: redis.Redis, example_namespace: str
) -> None:
    proc = _run([f"examples/{name}.py"], redis_url, ROOT, EXAMPLE_NAMESPACE=example_namespace)
    report = f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
    assert proc.returncode == 0, f"examples/{name}.py exited with {proc.returncode}\n{report}"
    assert EXPECTED[name] in proc.stdout, report
    assert f"namespace {example_namespace}" in proc.stdout, "the example ignored its namespace"
    left = _keys(r, example_namespace)
    assert not left, f"examples/{name}.py left keys behind: {left[:10]}"


def test_every_example_package_has_an_expected_outcome() -> None:
    found = {p.parent.name for p in EXAMPLES.glob("*/__main__.py")}
    assert found == set(PACKAGES), "add example packages to PACKAGES (and remove deleted ones)"


@pytest.mark.parametrize("name", sorted(PACKAGES))
def test_example_package_runs_to_its_expected_outcome_and_cleans_up(
    name: str, redis_url: str, r: redis.Redis, example_namespace: str
) -> None:
    line, spec = PACKAGES[name]
    assert load_app(spec).tasks, f"{spec} registers no task"
    proc = _run(["-m", f"examples.{name}"], redis_url, ROOT, EXAMPLE_NAMESPACE=example_namespace)
    report = f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
    assert proc.returncode == 0, f"examples/{name} exited with {proc.returncode}\n{report}"
    assert line in proc.stdout, report
    assert f"namespace {example_namespace}" in proc.stdout, "the example ignored its namespace"
    left = _keys(r, example_namespace)
    assert not left, f"examples/{name} left keys behind: {left[:10]}"


def _readme_blocks() -> list[str]:
    return RUN_MARKER.findall(README.read_text(encoding="utf-8"))


def test_readme_marks_its_quickstart_runnable() -> None:
    blocks = _readme_blocks()
    assert blocks, "no ```python block after a <!-- test: run --> marker in README.md"
    assert any("enqueue" in b and "result" in b for b in blocks), "the quickstart is not marked"


@pytest.mark.parametrize("index", range(len(_readme_blocks())))
def test_readme_code_block_runs(index: int, redis_url: str, r: redis.Redis, tmp_path: Path) -> None:
    code = _readme_blocks()[index]
    namespaces = re.findall(r'namespace="([^"]+)"', code)
    assert namespaces, "a runnable README block must name its namespace, so it can be cleaned"
    for ns in namespaces:
        _delete(r, ns)
    script = tmp_path / f"readme_block_{index}.py"
    script.write_text(code + "\n", encoding="utf-8")
    try:
        proc = _run([str(script)], redis_url, tmp_path)
        report = (
            f"--- code ---\n{code}\n--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
        )
        assert proc.returncode == 0, f"README block {index} exited with {proc.returncode}\n{report}"
    finally:
        for ns in namespaces:
            _delete(r, ns)
