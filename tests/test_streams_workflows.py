"""Streaming a later step of a workflow (job.py, workflows/handles.py, sse.py): the step has
no record until the step before it ends, so its reader waits for it while the workflow runs,
and ends when the workflow stopped before it; against a real Redis and a real worker."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from conveyor import Conveyor, JobState, chain, chord
from conveyor.sse import sse_events
from tests.conftest import fast, worker_thread


async def body(events: AsyncIterator[bytes]) -> list[dict[str, Any]]:
    """(event, data) of an SSE body, as dicts; keep-alive comments left out."""
    out = []
    async for part in events:
        text = part.decode()
        if text.startswith(":"):
            continue
        fields = dict(line.split(": ", 1) for line in text.strip().splitlines())
        out.append({"event": fields["event"], "data": json.loads(fields["data"])})
    return out


def test_the_stream_of_a_later_chain_step_waits_for_it_and_reads_it_live(app: Conveyor) -> None:
    @app.task
    def extract(doc: str) -> str:
        time.sleep(0.3)
        return f"text of {doc}"

    @app.task
    def summarize(text: str) -> Iterator[str]:
        yield from text.split()
        return "summary"

    with worker_thread(app, fast()):
        handle = chain(extract.s("d1"), summarize.s()).enqueue()
        assert handle.last.status() is JobState.UNKNOWN  # not added yet
        got: list[Any] = []
        reader = threading.Thread(target=lambda: got.extend(handle.jobs[1].stream()))
        reader.start()
        assert list(handle.last.stream()) == ["text", "of", "d1"]
        reader.join(5)
        assert got == ["text", "of", "d1"]
        assert handle.result(timeout=5) == "summary"


async def test_sse_of_a_chord_callback_waits_for_its_members(app: Conveyor) -> None:
    @app.task
    def square(x: int) -> int:
        time.sleep(0.1)
        return x * x

    @app.task
    async def total(values: list[int]) -> AsyncIterator[int]:
        for v in values:
            yield v

    with worker_thread(app, fast()):
        handle = await chord([square.s(i) for i in range(3)], total.s()).enqueue_async()
        got = await body(sse_events(handle.callback))
    assert got == [
        {"event": "chunk", "data": 0},
        {"event": "chunk", "data": 1},
        {"event": "chunk", "data": 4},
        {"event": "end", "data": {"state": "done"}},
    ]


async def test_a_step_after_a_failed_step_and_an_unknown_id_end_at_once(app: Conveyor) -> None:
    @app.task(retries=0)
    def extract(doc: str) -> str:
        raise ValueError(f"cannot read {doc}")

    @app.task
    def summarize(text: str) -> Iterator[str]:
        yield text

    with worker_thread(app, fast()):
        handle = chain(extract.s("d1"), summarize.s()).enqueue()
        started = time.monotonic()
        assert [c async for c in handle.last.stream_async()] == []  # ends once extract died
        assert time.monotonic() - started < 5
        got = await body(sse_events(handle.last))
    (end,) = got
    assert end["event"] == "end" and end["data"]["state"] == "unknown"
    why = end["data"]["workflow"]
    assert (why["id"], why["state"], why["step"]) == (handle.id, "dead", 0)
    assert "cannot read d1" in why["error"]
    started = time.monotonic()
    assert list(app.job("default:n:1-0").stream()) == []  # a plain unknown id: no wait
    assert await body(sse_events(app.job("default:n:1-0"))) == [
        {"event": "end", "data": {"state": "unknown"}}
    ]
    assert time.monotonic() - started < 0.5
