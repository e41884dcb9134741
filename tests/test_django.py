"""conveyor.django with pytest-django: the example project's tasks enqueue through Django's
task framework and run on a real worker, against a real Redis and a SQLite file."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest

PROJECT = Path(__file__).resolve().parent.parent / "examples" / "django_project"
sys.path.insert(0, str(PROJECT))
# Configured here, for this module's tests, rather than for every pytest run (pytest-django
# sees the configured settings). The variables are removed again so that the subprocesses
# other tests start (pytester, examples) do not inherit this project.
os.environ["DJANGO_SETTINGS_MODULE"] = "notesite.settings"
# The test database is a file: the worker's threads must see what a test committed.
os.environ["NOTES_TEST_DB"] = str(Path(tempfile.mkdtemp()) / "test-notes.sqlite3")

import django  # noqa: E402

try:
    django.setup()
finally:
    del os.environ["DJANGO_SETTINGS_MODULE"], os.environ["NOTES_TEST_DB"]

from django.core.management import CommandError, call_command  # noqa: E402
from django.db import connections, transaction  # noqa: E402
from django.db.backends.signals import connection_created  # noqa: E402
from django.utils import timezone  # noqa: E402
from notes.models import Note  # noqa: E402
from notes.tasks import explode, shout, summarize_note, which_attempt, word_count  # noqa: E402
from pytest_django.fixtures import Settings as SettingsWrapper  # noqa: E402

from conveyor import Conveyor  # noqa: E402
from conveyor.django import ConveyorBackend  # noqa: E402
from conveyor.django.compat import (  # noqa: E402
    InvalidTask,
    InvalidTaskBackend,
    TaskResultDoesNotExist,
    TaskResultMismatch,
    TaskResultStatus,
    task_backends,
    task_enqueued,
    task_finished,
    task_started,
)
from tests.conftest import fast, worker_thread  # noqa: E402

pytestmark = pytest.mark.django_db(transaction=True)


def tasks_setting(namespace: str, **options: Any) -> dict[str, Any]:
    return {
        "default": {
            "BACKEND": "conveyor.django.ConveyorBackend",
            "QUEUES": ["default", "reports"],
            "OPTIONS": {"NAMESPACE": namespace, **options},
        }
    }


@pytest.fixture
def backend(settings: SettingsWrapper, namespace: str, redis_url: str) -> ConveyorBackend:
    settings.TASKS = tasks_setting(namespace, URL=redis_url)
    b = task_backends["default"]
    assert isinstance(b, ConveyorBackend)
    return b


@pytest.fixture
def worker(backend: ConveyorBackend) -> Iterator[Conveyor]:
    app = backend.worker_app()
    with worker_thread(app, fast(queues=("default", "reports"))):
        yield app


def wait_finished(result: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while not result.is_finished:
        assert time.monotonic() < deadline, f"task {result.id} still {result.status}"
        time.sleep(0.05)
        result.refresh()
    return result


def test_the_framework_under_test_is_the_one_this_python_gets() -> None:
    """Django 6 must be tested through its own django.tasks, 5.2 through the backport: the
    backend's base class says which one compat.py picked."""
    base = ConveyorBackend.__mro__[1]
    if django.VERSION >= (6, 0):
        assert base.__module__ == "django.tasks.backends.base"
    else:
        assert base.__module__ == "django_tasks.backends.base"


def test_a_django_task_enqueues_through_conveyor_and_a_worker_runs_it(
    backend: ConveyorBackend, worker: Conveyor
) -> None:
    note = Note.objects.create(text="Redis streams keep unfinished jobs safe")
    before = timezone.now()
    result = summarize_note.enqueue(note.pk)
    assert result.status == TaskResultStatus.READY
    assert result.id.startswith("default:n:")  # a Conveyor job id
    assert result.args == [note.pk] and result.kwargs == {}
    wait_finished(result)
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == "Redis streams keep unfinished jobs safe"
    assert result.attempts == 1
    note.refresh_from_db()
    assert note.words == 6
    # The same result, looked up by id as another process would.
    again = summarize_note.get_result(result.id)
    assert again.status == TaskResultStatus.SUCCESSFUL
    assert again.return_value == result.return_value
    assert again.args == [note.pk] and again.kwargs == {}  # read back from Redis
    assert again.enqueued_at is not None and again.finished_at is not None
    assert before - timedelta(seconds=1) <= again.enqueued_at <= again.finished_at
    assert again.worker_ids and again.worker_ids[0]  # the Conveyor worker's name
    # Django checks that a result belongs to the task it is asked through.
    with pytest.raises(TaskResultMismatch):
        word_count.get_result(result.id)


def test_django_task_signals_are_sent_on_enqueue_and_around_each_run(
    backend: ConveyorBackend, worker: Conveyor
) -> None:
    seen: list[tuple[str, Any, str, str]] = []

    def receiver(name: str) -> Any:
        def receive(sender: Any, task_result: Any, **kwargs: Any) -> None:
            seen.append((name, sender, task_result.id, str(task_result.status)))
            if name == "finished" and task_result.errors:
                seen.append(("error", sender, task_result.id, task_result.errors[0].traceback))

        return receive

    receivers = [
        (s, receiver(n))
        for s, n in (
            (task_enqueued, "enqueued"),
            (task_started, "started"),
            (task_finished, "finished"),
        )
    ]
    for signal_, fn in receivers:
        signal_.connect(fn)
    try:
        ok = wait_finished(word_count.enqueue("a b c"))
        bad = wait_finished(explode.enqueue("torn"))
    finally:
        for signal_, fn in receivers:
            signal_.disconnect(fn)
    assert {s[1] for s in seen} == {ConveyorBackend}
    # task_enqueued is sent by the producer once the job is in Redis, so a worker may start
    # it first: the order holds within each side, not across them.
    mine = [(n, status) for n, _, i, status in seen if i == ok.id]
    assert mine.count(("enqueued", "READY")) == 1
    assert [m for m in mine if m[0] != "enqueued"] == [
        ("started", "RUNNING"),
        ("finished", "SUCCESSFUL"),
    ]
    failed = [(n, status) for n, _, i, status in seen if i == bad.id]
    assert failed.count(("enqueued", "READY")) == 1
    ran = [f for f in failed if f[0] != "enqueued"]
    assert ran[:2] == [("started", "RUNNING"), ("finished", "FAILED")]
    assert ran[2][0] == "error" and "ValueError: torn" in ran[2][1]
    assert len(ran) == 3  # RETRIES 0: one attempt


def test_django_validation_refuses_what_the_backend_cannot_run(backend: ConveyorBackend) -> None:
    with pytest.raises(InvalidTask, match="Queue 'nowhere' is not valid"):
        word_count.using(queue_name="nowhere").enqueue("x")
    with pytest.raises(InvalidTask, match="run_after must be an aware datetime"):
        shout.using(run_after=datetime(2030, 1, 1)).enqueue("x")
    with pytest.raises(InvalidTask, match="priority"):
        word_count.using(priority=101).enqueue("x")


def test_the_example_views_answer_at_once_and_serve_the_result(
    backend: ConveyorBackend, worker: Conveyor, client: Any
) -> None:
    posted = client.post("/notes", {"text": "a note to summarize"}, content_type="application/json")
    assert posted.status_code == 202
    body = posted.json()
    assert body["status"] == "READY"
    deadline = time.monotonic() + 10
    while (got := client.get(f"/tasks/{body['task']}").json())["status"] != "SUCCESSFUL":
        assert time.monotonic() < deadline, got
        time.sleep(0.05)
    assert got == {
        "task": body["task"],
        "status": "SUCCESSFUL",
        "return_value": "a note to summarize",
    }
    assert Note.objects.get(pk=body["note"]).words == 4


def test_queue_priority_run_after_context_and_async_tasks_map_onto_conveyor(
    backend: ConveyorBackend, worker: Conveyor
) -> None:
    counted = word_count.enqueue("one two three")
    assert counted.id.startswith("reports:h:")  # queue_name, and priority 10 -> high
    later = shout.using(run_after=timezone.now() + timedelta(seconds=0.3)).enqueue("hi")
    assert later.id.startswith("default:d:")  # delayed
    assert shout.get_result(later.id).status == TaskResultStatus.READY
    context = which_attempt.enqueue("ctx")
    assert wait_finished(counted).return_value == 3
    assert wait_finished(later).return_value == "HI"
    assert wait_finished(context).return_value == {"label": "ctx", "attempt": 1, "id": context.id}


async def test_aenqueue_and_aget_result(backend: ConveyorBackend, worker: Conveyor) -> None:
    result = await word_count.aenqueue("a b")
    deadline = time.monotonic() + 10
    while not result.is_finished:
        assert time.monotonic() < deadline
        await result.arefresh()
    assert result.return_value == 2


def test_a_failing_task_ends_failed_with_its_exception(
    backend: ConveyorBackend, worker: Conveyor
) -> None:
    result = wait_finished(explode.enqueue("no paper"))
    assert result.status == TaskResultStatus.FAILED
    assert result.errors[0].exception_class is ValueError
    assert "ValueError: no paper" in result.errors[0].traceback
    with pytest.raises(ValueError, match="failed"):
        result.return_value  # noqa: B018


def test_enqueue_on_commit_sends_nothing_until_the_commit_and_nothing_on_rollback(
    backend: ConveyorBackend, worker: Conveyor
) -> None:
    stream = backend.conveyor.keys("default").stream("normal")
    client = backend.conveyor.broker.client
    results: list[Any] = []
    with transaction.atomic():
        note = Note.objects.create(text="written in a transaction")
        transaction.on_commit(lambda: results.append(summarize_note.enqueue(note.pk)))
        assert client.xlen(stream) == 0  # not before the commit
    assert len(results) == 1
    assert wait_finished(results[0]).return_value == "written in a transaction"

    with pytest.raises(RuntimeError), transaction.atomic():
        Note.objects.create(text="rolled back")
        transaction.on_commit(partial(summarize_note.enqueue, 10**6))
        raise RuntimeError("rollback")
    assert client.xlen(stream) == 1  # only the committed one


def test_database_connections_are_closed_around_each_task(
    backend: ConveyorBackend, worker: Conveyor, settings: SettingsWrapper
) -> None:
    opened: list[Any] = []

    def created(sender: Any, connection: Any, **kwargs: Any) -> None:
        opened.append(connection)

    connection_created.connect(created)
    try:
        notes = [Note.objects.create(text=f"note {i}") for i in range(3)]
        results = [summarize_note.enqueue(n.pk) for n in notes]
        for r in results:
            wait_finished(r)
    finally:
        connection_created.disconnect(created)
    mine = connections["default"]  # this thread's: the test's own, left open
    in_workers = [c for c in opened if c is not mine]
    assert len(in_workers) >= 3  # one per task run: none kept between tasks (CONN_MAX_AGE 0)
    assert [c.connection for c in in_workers] == [None] * len(in_workers)  # each closed


@pytest.mark.parametrize(
    ("tasks", "message"),
    [
        (
            {"BACKEND": "conveyor.django.ConveyorBackend", "OPTIONS": {"NAMESPCE": "x"}},
            r"unknown option\(s\) NAMESPCE; ConveyorBackend's options are NAMESPACE, "
            r"RESULT_TTL, RETRIES, TIMEOUT, URL",
        ),
        (
            {"BACKEND": "conveyor.django.ConveyorBackend", "QUEUE": ["default"]},
            r"unknown key\(s\) QUEUE; ConveyorBackend takes BACKEND, OPTIONS, QUEUES",
        ),
        (
            {"BACKEND": "conveyor.django.ConveyorBackend", "OPTIONS": {"RETRIES": -1}},
            r"RETRIES'\] must be a whole number >= 0",
        ),
        (
            {"BACKEND": "conveyor.django.ConveyorBackend", "OPTIONS": {"NAMESPACE": "a b"}},
            r"invalid namespace name 'a b'",
        ),
    ],
)
def test_a_bad_tasks_entry_is_refused_naming_the_fix(
    settings: SettingsWrapper, tasks: dict[str, Any], message: str
) -> None:
    settings.TASKS = {"default": tasks}
    with pytest.raises(InvalidTaskBackend, match=message):
        task_backends["default"]


def test_an_unknown_result_id_does_not_exist(backend: ConveyorBackend) -> None:
    with pytest.raises(TaskResultDoesNotExist):
        summarize_note.get_result("default:n:1-0")
    with pytest.raises(TaskResultDoesNotExist, match="not a Conveyor job id"):
        summarize_note.get_result("nonsense")


def test_manage_py_conveyor_worker_runs_the_tasks_and_stops_on_sigterm(
    backend: ConveyorBackend, redis_url: str, namespace: str
) -> None:
    env = {
        **os.environ,
        "CONVEYOR_REDIS_URL": redis_url,
        "EXAMPLE_NAMESPACE": namespace,
        "PYTHONPATH": os.pathsep.join([str(PROJECT), *sys.path]),
    }
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "conveyor_worker", "-c", "2"],
        cwd=PROJECT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        result = word_count.enqueue("four words right here")
        assert wait_finished(result, timeout=20).return_value == 4
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert f"namespace {namespace}" in out


BURST = ("--burst", "--block-ms", "100", "--max-jobs", "100", "-q", "reports,default")


def test_manage_py_conveyor_worker_takes_flags_then_env_and_bursts(
    backend: ConveyorBackend, redis_url: str, namespace: str
) -> None:
    results = [word_count.enqueue(text) for text in ("one", "two words", "three words here")]
    env = {
        **os.environ,
        "CONVEYOR_REDIS_URL": redis_url,
        "EXAMPLE_NAMESPACE": namespace,
        "PYTHONPATH": os.pathsep.join([str(PROJECT), *sys.path]),
        "CONVEYOR_CONCURRENCY": "7",
        "CONVEYOR_BLOCK_MS": "500",  # loses to the flag
    }
    done = subprocess.run(
        [sys.executable, "manage.py", "conveyor_worker", *BURST],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    out = done.stdout + done.stderr
    # --burst: the worker ran the queue dry and exited 0 by itself.
    assert done.returncode == 0, out
    assert [wait_finished(r, timeout=1).return_value for r in results] == [1, 2, 3]
    for said in (
        "concurrency=7 (CONVEYOR_CONCURRENCY)",
        "block_ms=100 (--block-ms)",
        "burst=True (--burst)",
        "max_jobs=100 (--max-jobs)",
        "queues=('reports', 'default') (--queues)",
    ):
        assert said in out, out


@pytest.mark.parametrize(
    ("args", "kwargs", "env", "message"),
    [
        (["--max-jobs", "0"], {}, {}, "--max-jobs"),
        (["--prefetch", "some"], {}, {}, "neither a whole number nor 'auto'"),
        ([], {"concurrency": "many"}, {}, "--concurrency"),
        ([], {}, {"CONVEYOR_LEASE": "soon"}, "CONVEYOR_LEASE"),
    ],
)
def test_manage_py_conveyor_worker_refuses_a_bad_setting_before_it_runs(
    backend: ConveyorBackend,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    kwargs: dict[str, Any],
    env: dict[str, str],
    message: str,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(CommandError, match=re.escape(message)):
        call_command("conveyor_worker", *args, **kwargs)
