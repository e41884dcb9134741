"""What a worker does with a limited task, minus running it, for tests/test_limits.py.

Runs in OS processes (spawned by the tests): fetch deliveries, pass each through a limit's
gate, promote due jobs, ack the admitted ones. Only the limits and the existing queue
scripts are used; the worker itself is not.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from conveyor import Conveyor
from conveyor.broker import enqueue_calls, operations
from conveyor.broker.operations import Delivery
from conveyor.keys import GROUP, QueueKeys, job_id_for
from conveyor.limits import Admission, ConcurrencyLimit, Held, Limits, RateLimit, release, renew
from conveyor.producer import delayed_payload
from conveyor.wire import JobRecord, decode_fields, encode_record, envelope_fields

QUEUE = "default"


def setup(app: Conveyor) -> QueueKeys:
    keys = QueueKeys(app.namespace, QUEUE)
    for stream in keys.streams:
        app.broker.call(operations.ensure_group(stream))
    return keys


def add_jobs(app: Conveyor, keys: QueueKeys, task: str, tenants: list[str]) -> None:
    """One job per tenant listed, its tenant as the only argument."""
    jobs: list[dict[str, str | int]] = [
        {"task": task, "args": f'["{t}"]', "kwargs": "{}", "enqueued_at": 0, "attempt": 1}
        for t in tenants
    ]
    for i in range(0, len(jobs), 200):
        app.broker.call(enqueue_calls.enqueue_many(keys, "normal", jobs[i : i + 200]))


def parking(d: Delivery) -> tuple[str, bytes, bytes, str]:
    """(job id, payload, record, tenant) for a delivery, as the worker would build them."""
    env = decode_fields(d.fields)
    job_id = env.id or job_id_for(d.queue, d.level, d.entry_id)
    payload = delayed_payload(envelope_fields(env, id=job_id), d.level)
    record = encode_record(JobRecord(state="scheduled", attempt=env.attempt, task=env.task))
    return job_id, payload, record, str(env.args[0])


def promote_due(app: Conveyor, keys: QueueKeys) -> None:
    ids, _ = app.broker.call(operations.due(keys, 200))
    if ids:
        app.broker.call(operations.promote(keys, ids))


def drive_rate(url: str, namespace: str, rate: str, seconds: float) -> dict[str, Any]:
    """Loop deliveries of task 't' through a per-tenant rate gate for ``seconds``.

    Returns the Redis times (ms) at which each tenant's jobs were admitted, how many gate
    calls were made, and the Redis time at which the loop ended.
    """
    app = Conveyor(url, namespace=namespace)
    keys = QueueKeys(namespace, QUEUE)
    limit = Limits(rate=RateLimit.parse(rate))
    consumer = f"rate-{os.getpid()}"
    admitted: dict[str, list[int]] = {}
    gates = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        promote_due(app, keys)
        deliveries = app.broker.call(operations.fetch(keys, consumer, 20))
        for d in deliveries:
            job_id, payload, record, tenant = parking(d)
            answer: Admission = app.broker.call(
                limit.gate(
                    keys,
                    consumer,
                    d,
                    job_id,
                    payload,
                    record,
                    task="t",
                    lease_ms=0,
                    rate_key_value=tenant,
                )
            )
            gates += 1
            if answer.run:
                admitted.setdefault(tenant, []).append(answer.at_ms)
                app.broker.client.xack(keys.stream(d.level), GROUP, d.entry_id)
        if not deliveries:
            time.sleep(0.003)
    seconds_now, micros = app.broker.client.time()
    app.close()
    return {"admitted": admitted, "gates": gates, "end_ms": seconds_now * 1000 + micros // 1000}


def drive_concurrency(
    url: str, namespace: str, limit: int, threads: int, body_s: float, total: int, lease_ms: int
) -> dict[str, Any]:
    """``threads`` slots each fetching one job at a time of task 'c' through a concurrency
    gate, holding it ``body_s`` seconds, until ``total`` jobs ran in all processes.

    Returns the (start, end) wall times of each job body and the count of gate calls.
    """
    app = Conveyor(url, namespace=namespace)
    keys = QueueKeys(namespace, QUEUE)
    gate = Limits(concurrency=ConcurrencyLimit.parse(limit, retry_ms=lease_ms))
    done_key = f"{keys.prefix}test:done"
    consumer = f"conc-{os.getpid()}"
    bodies: list[tuple[float, float]] = []
    gates = [0]
    deadline = time.monotonic() + 30
    stop = threading.Event()

    def finished() -> bool:
        return int(app.broker.client.get(done_key) or 0) >= total or time.monotonic() > deadline

    def promoter() -> None:
        while not stop.is_set():
            promote_due(app, keys)
            time.sleep(0.01)

    def slot() -> None:
        while not finished():
            deliveries = app.broker.call(operations.fetch(keys, consumer, 1))
            if not deliveries:
                time.sleep(0.005)
                continue
            d = deliveries[0]
            job_id, payload, record, _ = parking(d)
            answer = app.broker.call(
                gate.gate(keys, consumer, d, job_id, payload, record, task="c", lease_ms=lease_ms)
            )
            gates[0] += 1
            if not answer.run:
                continue
            start = time.time()
            time.sleep(body_s)
            bodies.append((start, time.time()))
            app.broker.client.xack(keys.stream(d.level), GROUP, d.entry_id)
            app.broker.call(release(keys, consumer, d, job_id, task="c"))
            app.broker.client.incr(done_key)

    workers = [threading.Thread(target=slot) for _ in range(threads)]
    promoting = threading.Thread(target=promoter)
    promoting.start()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    stop.set()
    promoting.join()
    app.close()
    return {"bodies": bodies, "gates": gates[0]}


def hold_and_renew(
    url: str, namespace: str, job_ids: list[str], lease_ms: int, renewing: Any = None
) -> None:
    """A holder that renews its leases of task 'c' every lease_ms / 4 until it is killed;
    sets ``renewing`` (an Event) once its first renewal is stored."""
    app = Conveyor(url, namespace=namespace)
    keys = QueueKeys(namespace, QUEUE)
    held = [Held("c", None, j) for j in job_ids]
    while True:
        app.broker.call(renew(keys, held, lease_ms))
        if renewing is not None:
            renewing.set()
        time.sleep(lease_ms / 4000)
