"""The HTML pages, rendered on the server (Jinja2, every value escaped) from
the same reads as the JSON API; ``static/app.js`` keeps them live and sends
the actions. A backend without schedules gets a schedules page saying so."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jinja2
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse

from queuectl_core.schedule_seam import SchedulesUnsupportedError
from queuectl_core.stats import duration_text

from .access import parse_state, read, settings_of

router = APIRouter(include_in_schema=False)

ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=True,  # every page, whatever the file name
    undefined=jinja2.StrictUndefined,
)
ENV.filters["duration"] = duration_text
ENV.filters["short_time"] = lambda iso: "-" if not iso else f"{iso[:10]} {iso[11:19]}Z"


def render(request: Request, name: str, **values: Any) -> HTMLResponse:
    settings = settings_of(request)
    page = ENV.get_template(name).render(
        base=request.scope.get("root_path", "").rstrip("/"), page=name.removesuffix(".html"),
        store=settings.reader.describe(), allow_actions=settings.allow_actions, **values)
    return HTMLResponse(page)


@router.get("/", response_class=HTMLResponse)
async def overview(request: Request) -> HTMLResponse:
    data = await read(request, settings_of(request).reader.overview)
    return render(request, "overview.html", data=data)


@router.get("/jobs", response_class=HTMLResponse)
async def jobs(request: Request, state: str | None = None, queue: str | None = None,
               q: str | None = None, before: str | None = None) -> HTMLResponse:
    reader = settings_of(request).reader
    page = await read(request, functools.partial(
        reader.jobs, state=parse_state(state), queue=queue or None, text=q, before=before))
    return render(request, "jobs.html", data=page, states=[s for s in _states()],
                  filters={"state": state or "", "queue": queue or "", "q": q or ""})


@router.get("/job", response_class=HTMLResponse)
async def job(request: Request, id: str) -> HTMLResponse:
    reader = settings_of(request).reader
    found = await read(request, reader.job, id)
    if found is None:
        raise HTTPException(404, f"no job with id {id!r}")
    return render(request, "job.html", data=found)


@router.get("/dlq", response_class=HTMLResponse)
async def dlq(request: Request, before: str | None = None) -> HTMLResponse:
    reader = settings_of(request).reader
    page = await read(request, functools.partial(reader.dead, before=before))
    return render(request, "dlq.html", data=page)


@router.get("/workers", response_class=HTMLResponse)
async def workers(request: Request, limit: int = Query(1000, ge=1)) -> HTMLResponse:
    found = await read(request, settings_of(request).reader.workers)
    return render(request, "workers.html", workers=found[:limit])


@router.get("/schedules", response_class=HTMLResponse)
async def schedules(request: Request) -> HTMLResponse:
    try:
        found = await read(request, settings_of(request).reader.schedules)
    except SchedulesUnsupportedError:
        return render(request, "schedules.html", schedules=[], supported=False)
    return render(request, "schedules.html", schedules=found, supported=True)


@router.get("/schedule", response_class=HTMLResponse)
async def schedule(request: Request, name: str) -> HTMLResponse:
    try:
        found = await read(request, settings_of(request).reader.schedule, name)
    except SchedulesUnsupportedError:
        return render(request, "schedules.html", schedules=[], supported=False)
    if found is None:
        raise HTTPException(404, f"no schedule named {name!r}")
    return render(request, "schedule.html", s=found)


def _states() -> list[str]:
    from queuectl_core.models import JobState

    return [s.value for s in JobState]
