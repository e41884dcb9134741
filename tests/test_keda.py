"""What KEDA's ``redis-streams`` scaler reads stays readable: XINFO GROUPS' ``lag`` of the
``conveyor`` group on ``<ns>:{<queue>}:ready:<level>`` is a number, never nil, after Conveyor
trims, dead-letters and replays (a nil lag makes KEDA fall back or error out).

Redis reports lag as nil once an entry the group has not read yet was deleted (XTRIM MAXLEN,
XDEL): Conveyor trims only below the safe point, so the lag it leaves is always exact.
"""

from __future__ import annotations

from typing import Any

import redis

from conveyor import Conveyor, JobState, Retention, dead_letters
from conveyor.keys import GROUP
from tests.conftest import fast, wait_until, worker_thread


def group(r: redis.Redis, stream: str) -> dict[str, Any]:
    [info] = [g for g in r.xinfo_groups(stream) if g["name"] == GROUP.encode()]
    return dict(info)


def test_group_lag_stays_a_number_after_trim_dead_letters_and_replay(
    app: Conveyor, r: redis.Redis
) -> None:
    @app.task(retries=0)
    def work(i: int) -> int:
        if i % 10 == 0:
            raise ValueError(f"job {i} fails")
        return i

    stream = app.keys("default").stream("normal")
    jobs = work.enqueue_many([(i,) for i in range(300)])
    settings = fast(concurrency=8, retention=Retention(keep_count=50, trim_every=0.1))
    with worker_thread(app, settings):
        wait_until(lambda: all(j.status().finished for j in jobs[-5:]), 30, "the jobs to end")
        wait_until(lambda: r.xlen(stream) <= 60, 10, "history to be trimmed to 50")
        assert isinstance(group(r, stream)["lag"], int)
        dead = dead_letters.list_dead(app, "default", limit=100)
        assert len(dead) == 30
        replayed = [dead_letters.replay(app, "default", d.entry_id) for d in dead[:5]]
        wait_until(
            lambda: all(app.job(j).status() is JobState.DEAD for j in replayed if j),
            10,
            "the replayed jobs to fail again",
        )
    info = group(r, stream)
    assert info["lag"] == 0 and info["pending"] == 0, info
    # a backlog KEDA should scale for: lag counts exactly the undelivered jobs
    work.enqueue_many([(1,) for _ in range(25)])
    info = group(r, stream)
    assert info["lag"] == 25, info


def test_control_deleting_an_undelivered_entry_makes_lag_nil(app: Conveyor, r: redis.Redis) -> None:
    """The control: what Conveyor avoids is what breaks KEDA's lag."""

    @app.task
    def work() -> None:
        return None

    stream = app.keys("default").stream("normal")
    jobs = work.enqueue_many([() for _ in range(10)])
    r.xgroup_create(stream, GROUP, id="0")
    r.xreadgroup(GROUP, "someone", {stream: ">"}, count=2)
    assert group(r, stream)["lag"] == 8
    r.xdel(stream, jobs[5].id.rsplit(":", 1)[1])  # an undelivered entry, in the middle
    assert group(r, stream)["lag"] is None
