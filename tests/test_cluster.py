"""The core's behaviour on a real Redis Cluster (3 masters, 3 replicas, tests/redis_cluster.py).

Each test runs the real producer and worker code through ``redis+cluster://``; every script a
test reaches would fail with CROSSSLOT (or "non local key") if it touched a key outside its
queue's hash tag, so passing here is that check too.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from conveyor import Backoff, Conveyor, JobFailed, JobState, WorkerSettings, dead_letters
from conveyor.errors import ConfigurationError, ConnectionFailed
from conveyor.keys import GROUP
from conveyor.stats import discover_queues, queue_stats
from conveyor.testing import delete_namespace
from tests.conftest import fast, wait_until, worker_thread
from tests.redis_cluster import Cluster

#: Queue names whose hash tags land on different masters of any 3-master cluster are found
#: at run time (slots are split evenly but the names' slots are fixed).
QUEUES = [f"q{i}" for i in range(16)]

#: the Cluster and Sentinel session fixtures (until tests/conftest.py lists them)


def masters_of(app: Conveyor, queues: list[str]) -> dict[str, tuple[str, int]]:
    client = app.broker.client
    out = {}
    for q in queues:
        node = client.get_node_from_key(app.keys(q).stream("normal"))
        out[q] = (node.host, node.port)
    return out


def one_queue_per_master(app: Conveyor) -> list[str]:
    seen: dict[tuple[str, int], str] = {}
    for q, node in masters_of(app, QUEUES).items():
        seen.setdefault(node, q)
    assert len(seen) == 3, f"16 queues should cover the 3 masters, got {seen}"
    return list(seen.values())


def test_sixteen_queues_land_on_all_three_masters(cluster_app: Conveyor) -> None:
    placement = masters_of(cluster_app, QUEUES)
    per_master: dict[tuple[str, int], int] = {}
    for node in placement.values():
        per_master[node] = per_master.get(node, 0) + 1
    assert len(per_master) == 3, per_master


def test_jobs_on_queues_of_every_master_run_and_return_results(cluster_app: Conveyor) -> None:
    queues = one_queue_per_master(cluster_app)

    @cluster_app.task
    def add(a: int, b: int) -> int:
        return a + b

    with worker_thread(cluster_app, fast(queues=tuple(queues))):
        jobs = [add.using(queue=q).enqueue(i, 1) for i, q in enumerate(queues)]
        assert [j.result(timeout=10) for j in jobs] == [1, 2, 3]
        # bulk: one script per stream, sent as one pipeline routed per node
        many = cluster_app.enqueue_many(
            [add.using(queue=q).s(i, i) for i in range(300) for q in queues]
        )
        assert len(many) == 900
        wait_until(lambda: all(j.status() is JobState.DONE for j in many[-9:]), 20, "bulk")
        assert many[0].result(timeout=10) == 0


async def test_async_enqueue_and_result_on_cluster(cluster_app: Conveyor) -> None:
    queues = one_queue_per_master(cluster_app)

    @cluster_app.task
    async def double(x: int) -> int:
        return 2 * x

    with worker_thread(cluster_app, fast(queues=tuple(queues))):
        jobs = [await double.using(queue=q).enqueue_async(i) for i, q in enumerate(queues)]
        assert [await j.result_async(timeout=10) for j in jobs] == [0, 2, 4]
        many = await cluster_app.enqueue_many_async([double.using(queue=q).s(7) for q in queues])
        assert [await j.result_async(timeout=10) for j in many] == [14, 14, 14]


def test_an_idle_worker_wakes_for_a_job_on_any_node(cluster_app: Conveyor) -> None:
    """The idle wait blocks on every queue's streams at once (one read per queue: queues on
    one node still have different slots): a job on any of them is picked up at once."""
    queues = QUEUES[:8]
    assert len(set(masters_of(cluster_app, queues).values())) < len(queues), "shared nodes"

    @cluster_app.task
    def stamp() -> float:
        return time.monotonic()

    # a long block: a node whose read were missing would wait it out (or forever)
    with worker_thread(cluster_app, fast(queues=tuple(queues), block_ms=5000)):
        time.sleep(0.5)  # idle: blocked on all three nodes
        for q in [*queues, *reversed(queues)]:
            sent = time.monotonic()
            took = stamp.using(queue=q).enqueue().result(timeout=10) - sent
            assert took < 2.0, f"a job on {q} waited {took:.2f}s for the idle worker"


def test_retries_then_dead_then_replay_on_cluster(cluster_app: Conveyor) -> None:
    calls: list[int] = []

    @cluster_app.task(retries=1, backoff=Backoff(base=0.05, cap=0.05, jitter=False))
    def flaky(x: int) -> int:
        calls.append(x)
        if len(calls) <= 2:
            raise ValueError("boom")
        return x

    with worker_thread(cluster_app, fast()):
        job = flaky.enqueue(5)
        with pytest.raises(JobFailed):
            job.result(timeout=10)
        assert job.status() is JobState.DEAD
        dead = dead_letters.list_dead(cluster_app, "default")
        assert len(dead) == 1 and dead[0].reason == "failed"
        new_id = dead_letters.replay(cluster_app, "default", dead[0].entry_id)
        assert new_id is not None
        assert cluster_app.job(new_id).result(timeout=10) == 5
    assert len(calls) == 3


def test_delayed_and_unique_jobs_on_cluster(cluster_app: Conveyor) -> None:
    @cluster_app.task
    def echo(x: str) -> str:
        return x

    with worker_thread(cluster_app, fast()):
        t0 = time.monotonic()
        later = echo.enqueue_in(0.5, "later")
        first = echo.using(unique_key="k1").enqueue("a")
        again = echo.using(unique_key="k1").enqueue("b")
        assert first.created and not again.created and again.id == first.id
        assert later.result(timeout=10) == "later"
        assert time.monotonic() - t0 >= 0.45
        assert first.result(timeout=10) == "a"


def test_entry_of_a_vanished_consumer_is_reclaimed_on_cluster(cluster_app: Conveyor) -> None:
    @cluster_app.task
    def work() -> str:
        return "ok"

    job = work.enqueue()
    stream = cluster_app.keys("default").stream("normal")
    client = cluster_app.broker.client
    client.xgroup_create(stream, GROUP, id="0", mkstream=True)
    got = client.xreadgroup(GROUP, "ghost", {stream: ">"}, count=1)
    assert got, "the ghost consumer read the job"
    with worker_thread(cluster_app, fast()):
        assert job.result(timeout=15) == "ok"
    info = job.info()
    assert info.record is not None and info.record.worker != "ghost"


def test_cron_ticks_once_with_two_workers_on_cluster(cluster_app: Conveyor) -> None:
    runs: list[float] = []
    lock = threading.Lock()

    @cluster_app.cron("* * * * * *", grace=5)
    def tick() -> None:
        with lock:
            runs.append(time.time())

    settings = WorkerSettings(concurrency=2)
    with worker_thread(cluster_app, settings), worker_thread(cluster_app, settings):
        time.sleep(3.5)
    ticks = [
        k
        for k in cluster_app.broker.client.scan_iter(
            match=f"{cluster_app.namespace}:{{default}}:unique:cron:tick:*"
        )
    ]
    assert len(ticks) >= 2
    assert len(ticks) - 1 <= len(runs) <= len(ticks), (len(runs), len(ticks))


def test_stats_and_delete_namespace_visit_every_master(cluster_app: Conveyor) -> None:
    queues = one_queue_per_master(cluster_app)

    @cluster_app.task
    def noop() -> None:
        return None

    for q in queues:
        noop.using(queue=q).enqueue()
    assert discover_queues(cluster_app) == sorted(queues)
    assert [queue_stats(cluster_app, q).ready for q in queues] == [1, 1, 1]
    assert delete_namespace(cluster_app) >= 3
    assert discover_queues(cluster_app) == []


def test_graceful_stop_hands_back_unfinished_jobs_on_cluster(cluster_app: Conveyor) -> None:
    started = threading.Event()

    @cluster_app.task
    async def slow() -> str:
        import asyncio

        started.set()
        await asyncio.sleep(30)
        return "never"

    job = slow.enqueue()
    with worker_thread(cluster_app, fast(shutdown_grace=0.2)):
        assert started.wait(10)
    assert job.status() is JobState.QUEUED, "the unfinished job went back to its stream"


def test_trimming_keeps_unfinished_jobs_on_cluster(cluster_app: Conveyor) -> None:
    @cluster_app.task
    def noop(i: int) -> int:
        return i

    jobs = noop.enqueue_many([(i,) for i in range(1500)])
    with worker_thread(cluster_app, fast(concurrency=16)):
        wait_until(lambda: jobs[-1].status() is JobState.DONE, 30, "the backlog to drain")
    assert all(j.status() is JobState.DONE for j in jobs[-100:])


# -- bad input -------------------------------------------------------------------------------
def test_cluster_url_at_a_standalone_redis_is_one_line(redis_url: str) -> None:
    url = redis_url.replace("redis://", "redis+cluster://").rsplit("/", 1)[0]
    app = Conveyor(url, namespace="badinput")
    with pytest.raises((ConfigurationError, ConnectionFailed)) as err:
        app.broker.server_info()
    message = str(err.value)
    assert "\n" not in message and "cluster" in message.lower(), message


def test_standalone_url_at_a_cluster_node_is_one_line(cluster: Cluster) -> None:
    node = cluster.masters()[0]
    app = Conveyor(f"redis://127.0.0.1:{node.port}/0", namespace="badinput")
    with pytest.raises(ConfigurationError) as err:
        app.broker.server_info()
    message = str(err.value)
    assert "\n" not in message and "redis+cluster://" in message, message


def test_unreachable_seed_node_is_one_line() -> None:
    from tests.redis_servers import free_port

    app = Conveyor(f"redis+cluster://127.0.0.1:{free_port()}", namespace="badinput")
    with pytest.raises(ConnectionFailed) as err:
        app.broker.server_info()
    message = str(err.value)
    assert "\n" not in message and "cannot connect" in message, message


def test_crossslot_from_a_custom_key_is_one_line(cluster_app: Conveyor) -> None:
    from conveyor.broker import command

    with pytest.raises(ConfigurationError) as err:
        cluster_app.broker.call(command("MGET", "{a}x", "{b}y"))
    message = str(err.value)
    assert "\n" not in message and "hash tag" in message, message


def test_completions_reach_waiters_on_the_queues_shard_only_with_sharded_pubsub(
    cluster_app: Conveyor,
) -> None:
    """With sharded pub/sub (Redis 7+ on Cluster) a completion is SPUBLISHed on its queue's
    shard: an SSUBSCRIBE there hears it, a plain SUBSCRIBE (what a broadcast reaches) does
    not. Without it, completions are broadcast and a plain SUBSCRIBE on any node hears it."""

    @cluster_app.task
    def noop() -> str:
        return "ok"

    broker = cluster_app.broker
    broker.server_info()
    channel = cluster_app.keys("default").done_channel
    client = broker.client
    sharded = client.pubsub()
    sharded.ssubscribe(channel)
    plain = client.pubsub()
    plain.subscribe(channel)
    try:
        with worker_thread(cluster_app, fast()):
            job = noop.enqueue()
            assert job.result(timeout=10) == "ok"
        record = cluster_app.keys("default").record(job.id).encode()

        def heard(get: Any) -> bool:
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline:
                msg = get(timeout=0.2)
                if msg and isinstance(msg.get("data"), bytes) and record in msg["data"]:
                    return True
            return False

        if broker.sharded_done:
            assert heard(sharded.get_sharded_message)
            assert not heard(plain.get_message)
        else:
            assert heard(plain.get_message)
    finally:
        sharded.close()
        plain.close()


def test_signed_jobs_single_and_bulk_run_on_cluster(cluster: Cluster) -> None:
    """The signed enqueue scripts (and the signed-replay check) keep to the queue's slot."""
    import secrets

    app = Conveyor(cluster.url, namespace=f"test-{secrets.token_hex(4)}", signing_keys=[b"k" * 32])
    try:

        @app.task
        def inc(x: int) -> int:
            return x + 1

        queues = one_queue_per_master(app)
        with worker_thread(app, fast(queues=tuple(queues))):
            one = inc.using(queue=queues[0]).enqueue(1)
            many = app.enqueue_many([inc.using(queue=q).s(i) for i, q in enumerate(queues)])
            assert one.result(timeout=10) == 2
            assert [j.result(timeout=10) for j in many] == [1, 2, 3]
    finally:
        delete_namespace(app)
        app.close()
