"""Workflows on a real Redis Cluster: steps on queues of different masters hand off by
forward-then-ack (a script touching two queues' tags would fail with CROSSSLOT)."""

from __future__ import annotations

from conveyor import Conveyor, chain, chord
from tests.conftest import fast, worker_thread
from tests.test_cluster import one_queue_per_master


def test_a_chain_and_a_chord_across_three_masters_complete(cluster_app: Conveyor) -> None:
    a, b, c = one_queue_per_master(cluster_app)

    @cluster_app.task(queue=a)
    def extract(doc: str) -> str:
        return f"text:{doc}"

    @cluster_app.task(queue=b)
    def analyze(text: str) -> int:
        return len(text)

    @cluster_app.task(queue=c)
    def report(n: int) -> str:
        return f"{n} chars"

    @cluster_app.task(queue=a)
    def merge(values: list[int]) -> int:
        return sum(values)

    with worker_thread(cluster_app, fast()):
        handle = chain(extract.s("doc-1"), analyze.s(), report.s(), extract.s()).enqueue()
        assert handle.result(timeout=20) == "text:10 chars"
        members = [analyze.using(queue=q).s("x" * i) for i, q in enumerate([a, b, c, b, a])]
        assert chord(members, merge.s()).enqueue().result(timeout=20) == 0 + 1 + 2 + 3 + 4
