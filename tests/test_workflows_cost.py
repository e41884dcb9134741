"""A workflow step's Redis commands, counted with MONITOR (tests/workflows_cost.py)."""

from __future__ import annotations

from tests.workflows_cost import drain, scenarios

N = 200


def test_a_same_queue_step_adds_no_call_and_a_cross_queue_step_one_forward() -> None:
    table = scenarios(N)
    jobs, setup, done = table["chain step, same queue"]
    enq, same = drain(jobs, setup, done)
    # one script per chain, as a plain job costs one XADD (+1: the first call loads it)
    assert N // 2 <= enq["EVALSHA enqueue_signed"] <= N // 2 + 1
    assert not any(k in same for k in ("EVALSHA forward_step", "EVALSHA chord_report"))
    scripts = sum(v for k, v in same.items() if k.startswith("EVALSHA"))
    assert scripts / jobs < 0.5, same  # fetch and ack batched: far below one script per step
    jobs, setup, done = table["chain step, other queue"]
    _, cross = drain(jobs, setup, done)
    # one per handoff to another queue; the first calls of the 10 slots may each meet
    # NOSCRIPT and be sent again once the script is loaded
    assert N // 2 <= cross["EVALSHA forward_step"] <= N // 2 + 10
