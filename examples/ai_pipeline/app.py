"""The API of the document pipeline: POST a document, get its id at once (202), watch the
summary being written over Server-Sent Events, read the final result.

    POST /documents {"text": ...}      -> 202 {"job_id", "steps": {stage: job id}, ...}
    GET  /documents/{job_id}           -> {"state", "stage", "steps", "summary", "embedding"}
    GET  /documents/{job_id}/summary   -> text/event-stream: the summary's tokens, live
    DELETE /documents/{job_id}         -> cancels the step running now: the chain stops
    GET  /jobs/{id}, /jobs/{id}/events -> any one step's job (conveyor.fastapi.jobs_router)
    GET  /                             -> a small page doing all of that in a browser

The id a POST returns is the chain's (workflow) id; every step's job id derives from it and
is known before the step runs, so the summary endpoint can be opened at once: it waits for
the summarize step to be added, then streams it (``conveyor.sse``).

Serve it:  uvicorn examples.ai_pipeline.app:api
Work it:   conveyor worker examples.ai_pipeline.tasks:app -q extract,analyze,summarize,embed -c 20
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Annotated, Any

import msgspec
from fastapi import FastAPI, Header, HTTPException
from fastapi.responses import HTMLResponse, StreamingResponse
from pydantic import BaseModel, Field, field_validator

from conveyor import ChainHandle, ConfigurationError, Conveyor, Job, JobInfo, JobState
from conveyor.fastapi import ConveyorApp, jobs_router, lifespan
from conveyor.sse import HEADERS, KEEPALIVE, message, sse_events

from .tasks import STAGES, app, clean, pipeline

#: A chain's id, as ``chain(...).enqueue()`` makes it (uuid4 hex).
WORKFLOW_ID = re.compile(r"[0-9a-f]{32}")
#: How often the summary endpoint looks whether the summarize step was added yet.
LOOK_EVERY = 0.1
SUMMARIZE = STAGES.index("summarize")

api = FastAPI(title="Conveyor AI pipeline", lifespan=lifespan(app))
api.include_router(jobs_router(), prefix="/jobs")


class Document(BaseModel):
    text: str = Field(min_length=1, max_length=200_000)

    @field_validator("text")
    @classmethod
    def has_text(cls, text: str) -> str:
        if not clean(text):
            raise ValueError("the document has no text once its markup is removed")
        return text


def steps_of(conveyor: Conveyor, job_id: str) -> ChainHandle[Any]:
    """The chain's handle from its id alone: each step's id is ``<queue>:d:<id>-s<step>``."""
    if not WORKFLOW_ID.fullmatch(job_id):
        raise HTTPException(404, f"no document {job_id[:64]!r} (ids are 32 hex digits)")
    jobs: list[Job[Any]] = [conveyor.job(f"{q}:d:{job_id}-s{i}") for i, q in enumerate(STAGES)]
    return ChainHandle(conveyor, job_id, jobs)


async def known(handle: ChainHandle[Any]) -> list[JobInfo]:
    """Each step's state; 404 when no step is known (never added, or every record expired)."""
    infos = await asyncio.gather(*(job.info_async() for job in handle.jobs))
    if all(info.state is JobState.UNKNOWN for info in infos):
        raise HTTPException(404, f"no document {handle.id} (unknown, or its record expired)")
    return infos


@api.post("/documents", status_code=202)
async def submit(document: Document) -> dict[str, Any]:
    """Adds the chain's first step (one script call) and answers: nothing waits on a model."""
    handle = await pipeline(document.text).enqueue_async()
    return {
        "job_id": handle.id,
        "steps": {stage: job.id for stage, job in zip(STAGES, handle.jobs, strict=True)},
        "status": f"/documents/{handle.id}",
        "events": f"/documents/{handle.id}/summary",
    }


@api.get("/documents/{job_id}")
async def status(job_id: str, conveyor: ConveyorApp) -> dict[str, Any]:
    """Where the chain stands, and what its steps have produced so far."""
    handle = steps_of(conveyor, job_id)
    infos = await known(handle)
    # The chain stands at its latest step that exists (read in the same look as the rest).
    step = max(i for i, info in enumerate(infos) if info.state is not JobState.UNKNOWN)
    out: dict[str, Any] = {
        "job_id": job_id,
        "state": infos[step].state.value,
        "stage": STAGES[step],
        "steps": {stage: info.state.value for stage, info in zip(STAGES, infos, strict=True)},
    }
    summary, embedding = infos[SUMMARIZE], infos[-1]
    if summary.state is JobState.DONE and summary.record is not None:
        out["summary"] = summary.record.result
    if embedding.state is JobState.DONE and embedding.record is not None:
        out["embedding"] = embedding.record.result
    failed = infos[step].record
    if infos[step].state is not JobState.DONE and failed is not None and failed.error:
        out["error"] = failed.error
    return out


@api.delete("/documents/{job_id}")
async def cancel(job_id: str, conveyor: ConveyorApp) -> dict[str, str]:
    """Cancels the step that runs (or waits) now: the chain stops there. A step that ended
    meanwhile says ``already_ended`` (the next one may have started: call again)."""
    handle = steps_of(conveyor, job_id)
    where = await handle.info_async()
    if where.state is JobState.UNKNOWN:
        raise HTTPException(404, f"no document {job_id} (unknown, or its record expired)")
    result = await handle.jobs[where.step].cancel_async("cancelled through the API")
    return {"job_id": job_id, "stage": STAGES[where.step], "outcome": result.outcome.value}


@api.get("/documents/{job_id}/summary", response_class=StreamingResponse)
async def summary_events(
    job_id: str,
    conveyor: ConveyorApp,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """The summary's tokens as Server-Sent Events (``chunk`` per token, ``restart`` if a run
    was cut short, ``end``), opened as soon as the POST answered."""
    handle = steps_of(conveyor, job_id)
    await known(handle)
    try:
        body = sse_events(handle.jobs[SUMMARIZE], last_event_id=last_event_id)
    except ConfigurationError as exc:  # a malformed Last-Event-ID
        raise HTTPException(400, str(exc)) from None
    return StreamingResponse(
        once_added(handle, body), media_type="text/event-stream", headers=HEADERS
    )


async def once_added(handle: ChainHandle[Any], body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """``body`` once the summarize step exists; until then keep-alive comments, and an ``end``
    event if the chain failed before it (extract or analyze dead for good)."""
    silent = 0.0
    while True:
        info = await handle.info_async()
        if info.step >= SUMMARIZE:
            break
        if info.state.finished or info.state is JobState.UNKNOWN:  # summarize never will be
            end: dict[str, Any] = {"state": info.state.value, "stage": STAGES[info.step]}
            if info.job is not None and info.job.record is not None and info.job.record.error:
                end["error"] = info.job.record.error
            yield message("end", msgspec.json.encode(end))
            return
        await asyncio.sleep(LOOK_EVERY)
        silent += LOOK_EVERY
        if silent >= KEEPALIVE:
            yield b": keep-alive\n\n"
            silent = 0.0
    async for part in body:
        yield part


@api.get("/", response_class=HTMLResponse)
async def page() -> str:
    return PAGE


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Conveyor AI pipeline</title>
<style>body{font:16px system-ui;max-width:46rem;margin:2rem auto}textarea{width:100%}
#summary{white-space:pre-wrap;border:1px solid #ccc;padding:.5rem;min-height:3rem}</style>
</head><body>
<h1>extract &rarr; analyze &rarr; summarize &rarr; embed</h1>
<textarea id="text" rows="8">Redis Streams keep tasks until a worker acknowledges them.
A worker that crashes leaves its tasks pending, and another worker claims them again.
Streams also keep a history of tasks for replay and debugging.</textarea>
<p><button id="go">Submit</button> <span id="state"></span></p>
<div id="summary"></div><pre id="result"></pre>
<script>
const $ = (id) => document.getElementById(id);
$("go").onclick = async () => {
  $("summary").textContent = ""; $("result").textContent = "";
  const r = await fetch("/documents", {method: "POST", headers: {"content-type":
    "application/json"}, body: JSON.stringify({text: $("text").value})});
  const posted = await r.json();
  $("state").textContent = "queued as " + posted.job_id;
  const events = new EventSource(posted.events);
  events.addEventListener("chunk", (e) => {
    $("summary").textContent += JSON.parse(e.data) + " ";
  });
  events.addEventListener("restart", () => { $("summary").textContent = ""; });
  events.addEventListener("end", async () => {
    events.close();
    for (;;) {
      const s = await (await fetch(posted.status)).json();
      $("state").textContent = s.state + " (" + s.stage + ")";
      if (["done", "dead", "cancelled", "expired"].includes(s.state)) {
        $("result").textContent = JSON.stringify(s, null, 2); break;
      }
      await new Promise((ok) => setTimeout(ok, 200));
    }
  });
};
</script></body></html>
"""
