"""The ASGI application: the JSON API under ``/api/``, ``/metrics``, the
pages (:mod:`.pages`) and the static files.

Reads run in worker threads, one at a time (the store is used from one
thread at a time). Actions (retry, cancel, pause, resume, dlq retry) exist
only with ``allow_actions`` and need the token in the ``X-Queuectl-Token``
header (or ``Authorization: Bearer``), compared in constant time; each
calls the same function as its ``queuectl`` command.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from fastapi import APIRouter, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool

from queuectl_core.errors import InvalidStateError, JobNotFoundError, QueuectlError
from queuectl_core.models import JobState
from queuectl_core.schedule_seam import SchedulesUnsupportedError
from queuectl_core.timeutil import parse_duration_ms

from . import metrics, schemas
from .access import Gate, Settings, check_queue, parse_state, read, settings_of
from .reader import MAX_PAGE_SIZE, PAGE_SIZE, Reader

T = TypeVar("T")
STATIC = Path(__file__).parent / "static"

#: Headers of every response: no framing, no sniffing, scripts and styles
#: from this server only (the pages have no inline script).
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                               "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


api = APIRouter(prefix="/api", tags=["api"])


@api.get("/overview", response_model=schemas.Overview)
async def overview(request: Request) -> dict[str, Any]:
    """Counts per queue and state, paused queues, workers, the last hour's
    stats and per-minute series."""
    reader = settings_of(request).reader
    return await read(request, reader.overview)


@api.get("/stats", response_model=schemas.Stats)
async def stats(request: Request, since: str = "1h", queue: str | None = None
                ) -> dict[str, Any]:
    """What ``queuectl stats --since SINCE [--queue QUEUE] --json`` prints."""
    try:
        since_ms = parse_duration_ms(since, bare=None)
    except QueuectlError as exc:
        raise HTTPException(422, f"since: {exc}") from None
    if since_ms <= 0:
        raise HTTPException(422, "since: must be more than 0")
    reader = settings_of(request).reader
    return await read(request, reader.stats, since_ms, None if queue is None
                      else check_queue(queue))


@api.get("/jobs", response_model=schemas.JobsPage)
async def jobs(request: Request, state: str | None = None, queue: str | None = None,
               q: str | None = Query(None, description="Text in the id or command."),
               before: str | None = Query(None, description="The `next` of the page before."),
               limit: int = Query(PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE)) -> dict[str, Any]:
    """Jobs newest first, filtered, one page at a time (keyset pagination)."""
    reader = settings_of(request).reader
    return await read(request, functools.partial(
        reader.jobs, state=parse_state(state), queue=queue or None, text=q,
        before=before, limit=limit))


@api.get("/job", response_model=schemas.JobDetail)
async def job(request: Request, id: str) -> dict[str, Any]:
    """One job with its attempts (exit codes, signals, errors, output tails)."""
    found = await read(request, settings_of(request).reader.job, id)
    if found is None:
        raise HTTPException(404, f"no job with id {id!r}")
    return found


@api.get("/job/log", response_model=schemas.LogTail)
async def job_log(request: Request, id: str, attempt: int | None = Query(None, ge=1),
                  stream: str = Query("out", pattern="^(out|err)$")) -> dict[str, Any]:
    """The end of an attempt's output on this machine (default: the latest)."""
    reader = settings_of(request).reader
    return await run_in_threadpool(reader.log, id, attempt, "err" if stream == "err" else "out")


@api.get("/dlq", response_model=schemas.DeadPage)
async def dlq(request: Request, before: str | None = None,
              limit: int = Query(PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE)) -> dict[str, Any]:
    """Dead jobs, newest first, with how many there are."""
    reader = settings_of(request).reader
    return await read(request, functools.partial(reader.dead, before=before, limit=limit))


@api.get("/workers", response_model=list[schemas.Worker])
async def workers(request: Request) -> list[dict[str, Any]]:
    """Registered workers, in order of start, with their heartbeats."""
    return await read(request, settings_of(request).reader.workers)


NO_SCHEDULES: dict[int | str, dict[str, Any]] = {
    501: {"description": "The backend has no schedules."}}


@api.get("/schedules", response_model=list[schemas.Schedule], responses=NO_SCHEDULES)
async def schedules(request: Request) -> list[dict[str, Any]]:
    """Every schedule, by name (``queuectl schedule list --json``)."""
    return await read(request, settings_of(request).reader.schedules)


@api.get("/schedule", response_model=schemas.ScheduleDetail, responses=NO_SCHEDULES)
async def schedule(request: Request, name: str) -> dict[str, Any]:
    """One schedule with its next 5 fire times and last 10 firings
    (``queuectl schedule show NAME --json``)."""
    found = await read(request, settings_of(request).reader.schedule, name)
    if found is None:
        raise HTTPException(404, f"no schedule named {name!r}")
    return found


# ------------------------------------------------------------------ actions

def _job_action(settings: Settings, what: str, job_id: str) -> dict[str, Any]:
    from queuectl_core.cli.control import cancel_one
    from queuectl_core.cli.history import retry_dead

    from .reader import job_json

    app = settings.reader.app
    try:
        if what == "cancel":
            done, message = cancel_one(app, job_id)
        else:
            done = retry_dead(app, job_id)
            message = f"Job '{done.id}' moved back to queue for retry."
    except JobNotFoundError as exc:
        raise HTTPException(404, str(exc)) from None
    except InvalidStateError as exc:
        raise HTTPException(409, str(exc)) from None
    return {"ok": True, "message": message, "jobs": [job_json(done)]}


@api.post("/job/retry", response_model=schemas.ActionResult)
async def retry_job(request: Request, id: str,
                    settings: Gate) -> dict[str, Any]:
    """Move a dead job back to pending (``queuectl dlq retry ID``)."""
    return await read(request, _job_action, settings, "retry", id)


@api.post("/job/cancel", response_model=schemas.ActionResult)
async def cancel_job(request: Request, id: str,
                     settings: Gate) -> dict[str, Any]:
    """Cancel a job; a running command is stopped (``queuectl cancel ID``)."""
    return await read(request, _job_action, settings, "cancel", id)


def _pause(settings: Settings, queue: str, paused: bool) -> dict[str, Any]:
    from queuectl_core.cli.control import set_paused

    changed = set_paused(settings.reader.app, queue, paused)
    verb = "paused" if paused else "resumed"
    return {"ok": True, "message": f"Queue '{queue}' {verb}." if changed
            else f"Queue '{queue}' was {verb} already."}


@api.post("/queues/{queue}/pause", response_model=schemas.ActionResult)
async def pause(request: Request, queue: str,
                settings: Gate) -> dict[str, Any]:
    """Stop workers claiming from a queue (``queuectl pause QUEUE``)."""
    return await read(request, _pause, settings, check_queue(queue), True)


@api.post("/queues/{queue}/resume", response_model=schemas.ActionResult)
async def resume(request: Request, queue: str,
                 settings: Gate) -> dict[str, Any]:
    """Let workers claim from a paused queue again (``queuectl resume QUEUE``)."""
    return await read(request, _pause, settings, check_queue(queue), False)


def _retry_dead(settings: Settings, ids: list[str], all_: bool) -> dict[str, Any]:
    from queuectl_core.cli.history import retry_dead
    from queuectl_core.wakeup import notify

    from .reader import job_json

    app = settings.reader.app
    if all_:
        ids = [j.id for j in app.ledger.list_jobs(JobState.DEAD)]
    done, problems = [], []
    for job_id in dict.fromkeys(ids):
        try:
            done.append(retry_dead(app, job_id, wake=False))
        except (JobNotFoundError, InvalidStateError) as exc:
            if not all_:
                problems.append(str(exc))
    if done:
        notify(app.config.home)
    message = f"Moved {len(done)} dead job(s) back to the queue."
    if problems:
        message += " " + "; ".join(problems)
    return {"ok": not problems, "message": message, "jobs": [job_json(j) for j in done]}


@api.post("/dlq/retry", response_model=schemas.ActionResult)
async def retry_dead_jobs(request: Request, body: schemas.DeadRetry,
                          settings: Gate) -> dict[str, Any]:
    """Move dead jobs back to pending: those listed, or all (``queuectl dlq
    retry ID... | --all``)."""
    if not body.all and not body.ids:
        raise HTTPException(422, "give ids, or all: true")
    return await read(request, _retry_dead, settings, body.ids, body.all)


# ------------------------------------------------------------------ the app

def create_app(reader: Reader, *, token: str | None = None, allow_actions: bool = False,
               root_path: str = "") -> FastAPI:
    """The dashboard's ASGI application over ``reader``'s queue."""
    from . import pages

    app = FastAPI(title="queuectl", version="1", root_path=root_path,
                  docs_url=None, redoc_url=None, openapi_url="/api/openapi.json",
                  description="queuectl's dashboard API. Reads are open; actions need "
                              "--allow-actions and the token in the X-Queuectl-Token header.")
    app.state.settings = Settings(reader, token=token, allow_actions=allow_actions)
    app.include_router(api)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/metrics", include_in_schema=False)
    async def metrics_endpoint(request: Request) -> Response:
        body = await read(request, metrics.render, reader)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    @app.exception_handler(SchedulesUnsupportedError)
    async def no_schedules(request: Request, exc: SchedulesUnsupportedError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=501)

    @app.exception_handler(QueuectlError)
    async def store_error(request: Request, exc: QueuectlError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503)

    @app.middleware("http")
    async def headers(request: Request, call_next: Callable[[Request], Any]) -> Response:
        response: Response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        return response

    return app
