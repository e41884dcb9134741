"""The process pool: real spawned subprocesses, killed on timeout and cancel, replaced when
they die, and all gone after close (tests check /proc, so no zombie passes for gone)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import pytest

from conveyor import ConfigurationError, JobContext
from conveyor.worker.process_pool import (
    CANCELLED,
    PoolBroken,
    PoolClosed,
    ProcessPool,
    ProcessPoolSettings,
    exit_description,
    task_ref,
)
from tests import processpool_tasks as tasks

MOD = "tests.processpool_tasks"


def job(n: int = 1) -> JobContext:
    return JobContext(f"default:n:{n}-0", "t", "default", 1, 1, "w-1")


def running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def reaped(pid: int) -> bool:
    """True when ``pid`` is gone for good: not running, and no zombie left to wait for."""
    return not os.path.exists(f"/proc/{pid}")


async def wait_for_pids(pool: ProcessPool, count: int, timeout: float = 30.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while pool.ready != count or len(pool.pids) != count or not all(running(p) for p in pool.pids):
        assert time.monotonic() < deadline, f"pool has {pool.pids}, wanted {count} live"
        await asyncio.sleep(0.02)
    return pool.pids


@pytest.fixture
async def pool() -> AsyncIterator[ProcessPool]:
    p = ProcessPool(ProcessPoolSettings(size=2))
    await p.start()
    yield p
    p.close()


# -- pure -----------------------------------------------------------------------------------
def test_exit_description_names_signal_or_code() -> None:
    assert exit_description(-11) == "signal 11 (SIGSEGV)"
    assert exit_description(3) == "exit code 3"
    assert exit_description(None) == "an unknown status"


def test_task_ref_of_function_task_and_method() -> None:
    assert task_ref(tasks.add) == f"{MOD}:add"
    assert task_ref(tasks.double.fn) == f"{MOD}:double"
    assert task_ref(tasks.Maths.square) == f"{MOD}:Maths.square"
    with pytest.raises(ConfigurationError, match="inside a function or is a lambda"):
        task_ref(lambda: None)


@pytest.mark.parametrize("changes", [{"size": 0}, {"size": 1.5}, {"start_timeout": 0}])
def test_bad_settings_name_the_option(changes: dict[str, float]) -> None:
    with pytest.raises(ConfigurationError, match=f"ProcessPoolSettings.{next(iter(changes))}"):
        ProcessPoolSettings(**changes)  # type: ignore[arg-type]


# -- round trips ----------------------------------------------------------------------------
async def test_result_round_trip(pool: ProcessPool) -> None:
    out = await pool.run(f"{MOD}:add", [2, 3], {}, job(), None)
    assert out.ok and out.value == 5
    out = await pool.run(f"{MOD}:Maths.square", [], {"n": 7}, job(), 5.0)
    assert out.ok and out.value == 49
    assert os.getpid() not in {(await pool.run(f"{MOD}:pid", [], {}, job(), None)).value}


async def test_app_task_runs_its_fn_with_converted_args_and_no_redis(pool: ProcessPool) -> None:
    out = await pool.run(f"{MOD}:double", ["21"], {}, job(), None)  # bind converts "21"
    assert out.ok and out.value == 42, out
    out = await pool.run(f"{MOD}:redis_opened", [], {}, job(), None)
    assert out.ok and out.value is False


async def test_current_job_in_child_is_the_job_sent(pool: ProcessPool) -> None:
    out = await pool.run(f"{MOD}:who", [], {}, job(7), None)
    assert out.ok and out.value["id"] == "default:n:7-0" and out.value["attempt"] == 1
    assert out.value["pid"] in pool.pids


async def test_exception_comes_back_as_text_with_traceback(pool: ProcessPool) -> None:
    out = await pool.run(f"{MOD}:boom", ["bad thing"], {}, job(), None)
    assert not out.ok and not out.final
    assert out.error == "ValueError: bad thing"
    assert out.traceback is not None
    assert "processpool_tasks.py" in out.traceback and "raise ValueError(message)" in out.traceback
    assert "_serve" not in out.traceback  # starts in the user's code


async def test_non_json_result_is_a_final_failure(pool: ProcessPool) -> None:
    out = await pool.run(f"{MOD}:not_json", [], {}, job(), None)
    assert not out.ok and out.final and out.reason == "bad_result"
    assert out.error and "cannot cross the process boundary as JSON" in out.error
    assert (await pool.run(f"{MOD}:add", [1, 1], {}, job(), None)).value == 2


async def test_unknown_function_fails_its_job_only(pool: ProcessPool) -> None:
    out = await pool.run(f"{MOD}:nope", [], {}, job(), None)
    assert not out.ok and out.error and "AttributeError" in out.error
    out = await pool.run("no_such_module_xyz:f", [], {}, job(), None)
    assert not out.ok and out.error and "ModuleNotFoundError" in out.error
    assert (await pool.run(f"{MOD}:add", [1, 2], {}, job(), None)).value == 3


# -- kills ----------------------------------------------------------------------------------
async def test_timeout_kills_the_child_and_next_job_runs_on_a_fresh_one(
    pool: ProcessPool,
) -> None:
    before = set(pool.pids)
    started = time.monotonic()
    out = await pool.run(f"{MOD}:spin", [], {}, job(), 0.5)
    assert time.monotonic() - started < 5
    assert not out.ok and not out.final  # retried like any failure
    assert out.error and out.error.startswith("TaskTimeout: ") and "was killed" in out.error
    killed = before - set(pool.pids)
    assert len(killed) == 1 and not running(killed.pop())
    pids = await wait_for_pids(pool, 2)
    assert len(set(pids) - before) == 1  # replaced
    results = await asyncio.gather(
        *(pool.run(f"{MOD}:nap", [0.3], {}, job(i), 5.0) for i in range(2))
    )
    assert all(o.ok for o in results)
    assert {o.value["pid"] for o in results} == set(pids)


@pytest.mark.parametrize(
    ("fn", "error"),
    [
        ("segfault", "worker subprocess died with signal 11 (SIGSEGV) while running the job"),
        ("exit3", "worker subprocess died with exit code 3 while running the job"),
    ],
)
async def test_crash_fails_only_its_job(pool: ProcessPool, fn: str, error: str) -> None:
    napping = asyncio.ensure_future(pool.run(f"{MOD}:nap", [1.0], {}, job(1), 10.0))
    await asyncio.sleep(0.2)  # the nap holds one child; the crash gets the other
    crashed = await pool.run(f"{MOD}:{fn}", [], {}, job(2), 10.0)
    assert not crashed.ok and crashed.error == error and not crashed.final
    napped = await napping
    assert napped.ok and napped.value["ended"] - napped.value["started"] >= 0.9
    pids = await wait_for_pids(pool, 2)
    results = await asyncio.gather(*(pool.run(f"{MOD}:pid", [], {}, job(i), 5.0) for i in range(4)))
    assert all(o.ok for o in results) and {o.value for o in results} <= set(pids)


async def test_cancel_kills_the_child_running_the_job(pool: ProcessPool) -> None:
    assert pool.cancel("default:n:9-0") is False  # nothing runs it
    spinning = asyncio.ensure_future(pool.run(f"{MOD}:spin", [], {}, job(9), None))
    await asyncio.sleep(0.3)
    before = set(pool.pids)
    assert pool.cancel("default:n:9-0") is True
    out = await asyncio.wait_for(spinning, 10)
    assert not out.ok and out.final and out.reason == CANCELLED
    assert out.error and "cancelled" in out.error
    killed = before - set(pool.pids)
    assert len(killed) == 1 and not running(killed.pop())
    assert (await pool.run(f"{MOD}:add", [2, 2], {}, job(), None)).value == 4


async def test_cancelled_run_kills_its_child(pool: ProcessPool) -> None:
    """The worker stopping cancels its slots: the job is handed back, its child must die."""
    spinning = asyncio.ensure_future(pool.run(f"{MOD}:spin", [], {}, job(), None))
    await asyncio.sleep(0.3)
    before = set(pool.pids)
    spinning.cancel()
    with pytest.raises(asyncio.CancelledError):
        await spinning
    deadline = time.monotonic() + 10
    while not before - set(pool.pids):
        assert time.monotonic() < deadline, "the abandoned job's child still runs"
        await asyncio.sleep(0.02)
    await wait_for_pids(pool, 2)
    killed = before - set(pool.pids)
    assert len(killed) == 1 and not running(killed.pop())


# -- size and close -------------------------------------------------------------------------
async def test_pool_size_bounds_concurrent_jobs(pool: ProcessPool) -> None:
    started = time.monotonic()
    two = await asyncio.gather(*(pool.run(f"{MOD}:nap", [1.0], {}, job(i), 10) for i in range(2)))
    took_two = time.monotonic() - started
    started = time.monotonic()
    three = await asyncio.gather(*(pool.run(f"{MOD}:nap", [1.0], {}, job(i), 10) for i in range(3)))
    took_three = time.monotonic() - started
    assert all(o.ok for o in two + three)
    assert 0.95 <= took_two < 1.8, took_two
    assert 1.95 <= took_three < 3.5, took_three
    assert len({o.value["pid"] for o in three}) == 2


async def test_close_leaves_no_child_alive() -> None:
    pool = ProcessPool(ProcessPoolSettings(size=3))
    await pool.start()
    pids = pool.pids
    assert len(pids) == 3 and all(running(p) for p in pids)
    spinning = asyncio.ensure_future(pool.run(f"{MOD}:spin", [], {}, job(), None))
    await asyncio.sleep(0.3)
    pool.close()
    assert all(reaped(p) for p in pids)
    with pytest.raises(PoolClosed):
        await asyncio.wait_for(spinning, 5)
    pool.close()  # twice is fine
    with pytest.raises(PoolClosed):
        await pool.run(f"{MOD}:add", [1, 2], {}, job(), None)


PARENT = f"""
import asyncio, sys
from conveyor import JobContext
from conveyor.worker.process_pool import ProcessPool, ProcessPoolSettings

async def main():
    pool = ProcessPool(ProcessPoolSettings(size=2))
    await pool.start()
    print(*pool.pids, flush=True)
    await pool.run("{MOD}:spin", [], {{}}, JobContext("j", "t", "q", 1, 1, "w"), None)

asyncio.run(main())
"""


def test_children_exit_when_the_worker_process_is_killed() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True, cwd=os.getcwd()
    )
    try:
        assert parent.stdout is not None
        pids = [int(p) for p in parent.stdout.readline().split()]
        assert len(pids) == 2 and all(running(p) for p in pids)
        time.sleep(0.3)  # one child is spinning in its job
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 10
        while any(running(p) for p in pids):
            assert time.monotonic() < deadline, "orphaned worker subprocesses"
            time.sleep(0.05)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


async def test_children_not_ready_in_time_break_the_pool() -> None:
    pool = ProcessPool(ProcessPoolSettings(size=1, start_timeout=0.001))
    try:
        with pytest.raises(PoolBroken, match="start_timeout"):
            await pool.start()
    finally:
        pool.close()
    assert pool.pids == []


async def test_large_arguments_and_result_cross_the_pipe(pool: ProcessPool) -> None:
    """Larger than a pipe's buffer (64 KiB) both ways: the loop reads whole messages."""
    big = {"rows": ["x" * 1000] * 2000}  # ~2 MB of JSON
    out = await pool.run(f"{MOD}:echo", [big], {}, job(), 10.0)
    assert out.ok and out.value == big
