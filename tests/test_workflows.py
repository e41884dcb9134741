"""Chains, groups and chords run by a real worker on a real Redis."""

from __future__ import annotations

import pytest
import redis

from conveyor import Conveyor, JobFailed, JobState, chain, chord, group
from conveyor.dead_letters import list_dead, replay
from tests.conftest import fast, worker_thread


def _tasks(app: Conveyor) -> dict[str, object]:
    @app.task
    def extract(doc: str) -> str:
        return f"text of {doc}"

    @app.task(queue="analyze")
    def analyze(text: str, mood: str = "calm") -> dict[str, str]:
        return {"text": text, "mood": mood}

    @app.task(queue="summarize")
    async def summarize(analysis: dict[str, str]) -> str:
        return f"{analysis['text']} ({analysis['mood']})"

    @app.task
    def square(x: int) -> int:
        return x * x

    @app.task(queue="merge")
    def total(values: list[int], offset: int = 0) -> int:
        return sum(values) + offset

    return locals()


def test_a_chain_passes_each_result_on_and_returns_the_last(app: Conveyor) -> None:
    t = _tasks(app)
    c = chain(t["extract"].s("d1"), t["analyze"].s(mood="glad"), t["summarize"].s())  # type: ignore[attr-defined]
    with worker_thread(app, fast()):
        handle = c.enqueue()
        assert handle.result(timeout=10) == "text of d1 (glad)"
        assert handle.status() is JobState.DONE
        assert [j.status() for j in handle.jobs] == [JobState.DONE] * 3


def test_pipe_builds_the_same_chain_and_the_handle_answers_before_any_step_ran(
    app: Conveyor,
) -> None:
    t = _tasks(app)
    c = t["extract"].s("d2") | t["analyze"].s() | t["summarize"].s()  # type: ignore[attr-defined]
    assert len(c.steps) == 3
    handle = c.enqueue()  # no worker yet
    info = handle.info()
    assert info.state is JobState.QUEUED and info.step == 0
    assert handle.last.status() is JobState.UNKNOWN  # not added until step 2 ends
    with worker_thread(app, fast()):
        assert handle.result(timeout=10) == "text of d2 (calm)"


def test_a_group_runs_in_parallel_and_lists_results_in_order(app: Conveyor) -> None:
    t = _tasks(app)
    with worker_thread(app, fast()):
        handle = group(t["square"].s(i) for i in range(6)).enqueue()  # type: ignore[attr-defined]
        assert handle.results(timeout=10) == [0, 1, 4, 9, 16, 25]


def test_a_chord_calls_its_callback_once_with_all_results_in_member_order(
    app: Conveyor, r: redis.Redis
) -> None:
    t = _tasks(app)
    members = group(t["square"].s(i) for i in range(10))  # type: ignore[attr-defined]
    with worker_thread(app, fast(concurrency=8)):
        handle = (members | t["total"].s(offset=1000)).enqueue()  # type: ignore[attr-defined]
        assert handle.result(timeout=10) == sum(i * i for i in range(10)) + 1000
    # the callback ran once, and its fan-in hash went with its ack
    assert r.xlen(app.keys("merge").stream("normal")) == 1
    assert not r.exists(app.keys("merge").chord(handle.id))


def test_a_chord_callback_can_be_followed_by_more_steps(app: Conveyor) -> None:
    t = _tasks(app)
    with worker_thread(app, fast()):
        c = chord([t["square"].s(i) for i in range(3)], t["total"].s()) | t["square"].s()  # type: ignore[attr-defined]
        assert c.enqueue().result(timeout=10) == 25


def test_a_failed_step_stops_the_chain_names_it_and_a_replay_resumes_it(
    app: Conveyor,
) -> None:
    calls: list[str] = []

    @app.task
    def first(x: int) -> int:
        return x + 1

    @app.task(retries=0)
    def flaky(x: int) -> int:
        calls.append("flaky")
        if len(calls) == 1:
            raise RuntimeError("upstream down")
        return x * 10

    @app.task(queue="other")
    def last(x: int) -> str:
        return f"got {x}"

    with worker_thread(app, fast()):
        handle = (first.s(1) | flaky.s() | last.s()).enqueue()
        with pytest.raises(JobFailed) as failed:
            handle.result(timeout=10)
        assert failed.value.job_id == handle.jobs[1].id
        assert handle.status() is JobState.DEAD
        assert handle.last.status() is JobState.UNKNOWN  # the chain stopped there
        (dead,) = list_dead(app, "default")
        assert dead.job_id == handle.jobs[1].id
        assert dead.fields["dead_workflow"] == f"chain {handle.id} step 2 of 3 (flaky)"
        assert replay(app, "default", dead.entry_id) == handle.jobs[1].id
        assert handle.result(timeout=10) == "got 20"


def test_a_chord_member_that_dies_fails_the_chord_and_its_replay_completes_it(
    app: Conveyor,
) -> None:
    state = {"fail": True}

    @app.task(retries=0, queue="members")
    def member(i: int) -> int:
        if i == 2 and state["fail"]:
            raise ValueError("bad chunk")
        return i

    @app.task
    def merge(values: list[int]) -> list[int]:
        return values

    with worker_thread(app, fast()):
        handle = chord([member.s(i) for i in range(4)], merge.s()).enqueue()
        with pytest.raises(JobFailed) as failed:
            handle.result(timeout=10)
        assert failed.value.job_id == handle.callback.id
        assert "member 3 of 4" in (failed.value.error or "")
        state["fail"] = False
        (dead,) = list_dead(app, "members")
        replay(app, "members", dead.entry_id)
        assert handle.result(timeout=10) == [0, 1, 2, 3]


def test_on_error_include_calls_the_callback_with_the_error_in_place(app: Conveyor) -> None:
    @app.task(retries=0)
    def member(i: int) -> int:
        if i == 1:
            raise ValueError("bad chunk")
        return i

    @app.task(queue="merge")
    def merge(values: list[object]) -> list[object]:
        return values

    with worker_thread(app, fast()):
        handle = chord([member.s(i) for i in range(3)], merge.s(), on_error="include").enqueue()
        got = handle.result(timeout=10)
    assert got[0] == 0 and got[2] == 2
    assert got[1]["reason"] == "failed" and "bad chunk" in got[1]["error"]
    assert got[1]["job_id"] == handle.members[1].id


def test_a_retried_step_keeps_its_place_in_the_chain(app: Conveyor) -> None:
    tries: list[int] = []

    @app.task(retries=2, backoff=0.01)
    def wobbly(x: int) -> int:
        tries.append(x)
        if len(tries) < 3:
            raise RuntimeError("again")
        return x + 1

    @app.task(queue="q2")
    def double(x: int) -> int:
        return 2 * x

    with worker_thread(app, fast()):
        assert (wobbly.s(1) | double.s()).enqueue().result(timeout=10) == 4
    assert len(tries) == 3


def test_same_queue_handoff_is_in_the_ack_and_cross_queue_leaves_a_marker(
    app: Conveyor, r: redis.Redis
) -> None:
    t = _tasks(app)
    with worker_thread(app, fast()):
        same = (t["square"].s(3) | t["square"].s()).enqueue()  # type: ignore[attr-defined]
        assert same.result(timeout=10) == 81
        cross = (t["extract"].s("x") | t["analyze"].s()).enqueue()  # type: ignore[attr-defined]
        assert cross.result(timeout=10) == {"text": "text of x", "mood": "calm"}
    assert not r.exists(app.keys("default").handoff(same.jobs[1].id))
    assert r.exists(app.keys("analyze").handoff(cross.jobs[1].id))


def test_signed_apps_sign_every_step_and_chord_callback(redis_url: str, namespace: str) -> None:
    app = Conveyor(redis_url, namespace=namespace, signing_keys=[b"k" * 32])
    try:

        @app.task
        def inc(x: int) -> int:
            return x + 1

        @app.task(queue="signed-other")
        def add_all(values: list[int]) -> int:
            return sum(values)

        with worker_thread(app, fast()):
            assert (inc.s(1) | inc.s() | inc.s()).enqueue().result(timeout=10) == 4
            handle = chord([inc.s(i) for i in range(5)], add_all.s() | inc.s()).enqueue()
            assert handle.result(timeout=10) == 16
        assert list_dead(app, "default") == [] and list_dead(app, "signed-other") == []
    finally:
        app.close()


async def test_async_twins_enqueue_and_wait(app: Conveyor) -> None:
    from conveyor.testing import worker_task

    t = _tasks(app)
    async with worker_task(app, fast()):
        handle = await (t["square"].s(2) | t["square"].s()).enqueue_async()  # type: ignore[attr-defined]
        assert await handle.result_async(timeout=10) == 16
        g = await group(t["square"].s(i) for i in range(3)).enqueue_async()  # type: ignore[attr-defined]
        assert await g.results_async(timeout=10) == [0, 1, 4]
        c = await chord([t["square"].s(i) for i in range(3)], t["total"].s()).enqueue_async()  # type: ignore[attr-defined]
        assert await c.result_async(timeout=10) == 5


def test_conveyor_dead_show_names_the_step_and_dead_replay_resumes_the_chain(
    app: Conveyor, redis_url: str
) -> None:
    from click.testing import CliRunner

    from conveyor.cli import main

    broken = {"on": True}

    @app.task(retries=0, queue="steps")
    def fragile(x: int) -> int:
        if broken["on"]:
            raise RuntimeError("model offline")
        return x + 1

    @app.task
    def start(x: int) -> int:
        return x

    env = {"CONVEYOR_REDIS_URL": redis_url, "CONVEYOR_NAMESPACE": app.namespace}
    with worker_thread(app, fast()):
        handle = (start.s(1) | fragile.s() | start.s()).enqueue()
        with pytest.raises(JobFailed):
            handle.result(timeout=10)
        (dead,) = list_dead(app, "steps")
        shown = CliRunner().invoke(main, ["dead", "show", dead.entry_id, "-q", "steps"], env=env)
        assert shown.exit_code == 0, shown.output
        assert f"chain {handle.id} step 2 of 3 (fragile)" in shown.output
        broken["on"] = False
        replayed = CliRunner().invoke(
            main, ["dead", "replay", dead.entry_id, "-q", "steps"], env=env
        )
        assert replayed.exit_code == 0, replayed.output
        assert handle.result(timeout=10) == 2


def test_a_result_too_large_for_the_next_step_fails_the_step_saying_so(
    redis_url: str, namespace: str
) -> None:
    app = Conveyor(redis_url, namespace=namespace, max_payload_bytes=1000)
    try:

        @app.task
        def big(n: int) -> str:
            return "x" * n

        @app.task
        def size(text: str) -> int:
            return len(text)

        with worker_thread(app, fast()):
            assert (big.s(100) | size.s()).enqueue().result(timeout=10) == 100
            handle = (big.s(5000) | size.s()).enqueue()
            with pytest.raises(JobFailed) as failed:
                handle.result(timeout=10)
        assert "cannot be handed to the next step" in (failed.value.error or "")
        assert "over the 1000-byte limit" in (failed.value.error or "")
        assert handle.last.status() is JobState.UNKNOWN
    finally:
        app.close()
