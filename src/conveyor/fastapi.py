"""FastAPI (and Starlette): the app's connections opened and closed with the server, the app
handed to endpoints through ``Depends``, and a router that reports a job's state and result
and serves its streamed chunks as Server-Sent Events.

    from fastapi import FastAPI
    from conveyor.fastapi import ConveyorApp, jobs_router, lifespan

    api = FastAPI(lifespan=lifespan(app))
    api.include_router(jobs_router(), prefix="/jobs")

    @api.post("/summaries", status_code=202)
    async def summarize_doc(doc_id: str) -> dict[str, str]:
        job = await summarize.enqueue_async(doc_id)      # one XADD, answered at once
        return {"job_id": job.id}

    @api.delete("/summaries/{job_id}")                  # endpoints that need the app
    async def cancel(job_id: str, conveyor: ConveyorApp) -> dict[str, str]:
        return {"outcome": (await conveyor.job(job_id).cancel_async()).outcome.value}

Install with ``pip install conveyor-queue[fastapi]``. The lifespan checks at start-up that
Redis answers (a server that cannot reach it does not start) and closes the clients at
shutdown; endpoints get the app from the request, so a test can start the server with
another app bound (``lifespan(test_app)``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Annotated, Any

try:
    from fastapi import APIRouter, Depends, Header, HTTPException, Request
    from fastapi.responses import StreamingResponse
except ImportError as exc:  # the extra is optional: say how to get it
    raise ImportError(
        "conveyor.fastapi needs FastAPI: pip install 'conveyor-queue[fastapi]'"
    ) from exc

from .app import Conveyor
from .errors import ConfigurationError
from .job import Job, JobState
from .sse import sse

#: Where the lifespan puts the app in Starlette's lifespan state (``request.state``).
STATE_KEY = "conveyor"

MISSING_LIFESPAN = (
    "no Conveyor app on this request: create the FastAPI app with "
    "FastAPI(lifespan=conveyor.fastapi.lifespan(app)); to keep a lifespan of your own, pass "
    "it along: lifespan(app, inner=your_lifespan)"
)

Lifespan = Callable[[Any], AbstractAsyncContextManager[Mapping[str, Any] | None]]


def lifespan(app: Conveyor, inner: Lifespan | None = None) -> Lifespan:
    """A FastAPI/Starlette lifespan that checks Redis at start-up, gives endpoints the app
    (``ConveyorApp`` / ``get_conveyor``) and closes its connections at shutdown.

    ``inner``: your own lifespan, entered inside this one; the state it yields is kept.
    """

    @asynccontextmanager
    async def span(server: Any) -> AsyncIterator[Mapping[str, Any]]:
        await app.broker.aserver_info()  # one line naming the URL when Redis is not there
        try:
            if inner is None:
                yield {STATE_KEY: app}
            else:
                async with inner(server) as state:
                    yield {**(state or {}), STATE_KEY: app}
        finally:
            await app.aclose()
            app.close()

    return span


def get_conveyor(request: Request) -> Conveyor:
    """The ``Depends`` provider: the app the server's lifespan opened."""
    app = getattr(request.state, STATE_KEY, None)
    if not isinstance(app, Conveyor):
        raise ConfigurationError(MISSING_LIFESPAN)
    return app


#: An endpoint parameter annotated with this receives the app: ``conveyor: ConveyorApp``.
ConveyorApp = Annotated[Conveyor, Depends(get_conveyor)]


def jobs_router() -> APIRouter:
    """``GET /{job_id}``: a job's state, with its result once done or its error once dead;
    ``GET /{job_id}/events``: its streamed chunks as Server-Sent Events (``conveyor.sse``).

    404 for an id nothing in Redis knows (or whose record expired), 400 for a string that is
    not a job id (or a malformed ``Last-Event-ID``). Mount it where you like:
    ``api.include_router(jobs_router(), prefix="/jobs")``.
    """
    router = APIRouter()

    @router.get("/{job_id}")
    async def job_status(job_id: str, conveyor: ConveyorApp) -> dict[str, Any]:
        job = _job(conveyor, job_id)
        info = await job.info_async()
        if info.state is JobState.UNKNOWN or (
            info.state is JobState.EXPIRED and not info.expired_by_option
        ):
            raise HTTPException(404, f"no job {job_id} (unknown, or its record has expired)")
        out: dict[str, Any] = {"job_id": job_id, "state": info.state.value}
        record = info.record
        if record is not None:
            if info.state is JobState.DONE:
                out["result"] = record.result
            if record.error:
                out["error"] = record.error
            if record.reason:
                out["reason"] = record.reason
        progress = await job.progress_async()
        if progress is not None and not info.state.finished:
            out["progress"] = {"fraction": progress.fraction, "message": progress.message}
        return out

    @router.get("/{job_id}/events", response_class=StreamingResponse)
    async def job_events(
        job_id: str,
        conveyor: ConveyorApp,
        last_event_id: Annotated[str | None, Header()] = None,
    ) -> StreamingResponse:
        """The job's streamed chunks as Server-Sent Events (``conveyor.sse``), from the start
        or after the browser's ``Last-Event-ID``, ending with an ``end`` event."""
        job = _job(conveyor, job_id)
        if (await job.info_async()).state is JobState.UNKNOWN:
            raise HTTPException(404, f"no job {job_id} (not added yet, or its record expired)")
        try:
            return sse(job, last_event_id=last_event_id)
        except ConfigurationError as exc:  # a malformed Last-Event-ID, before any byte is sent
            raise HTTPException(400, str(exc)) from None

    return router


def _job(conveyor: Conveyor, job_id: str) -> Job[Any]:
    try:
        return conveyor.job(job_id)
    except ConfigurationError as exc:  # not a job id at all
        raise HTTPException(400, str(exc)) from None
