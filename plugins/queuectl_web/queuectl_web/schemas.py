"""The JSON API's response and request models (its OpenAPI document,
``/api/openapi.json``, is built from them). A job is the object
``queuectl show --json`` prints, env values masked."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class QueueRow(BaseModel):
    queue: str
    counts: dict[str, int] = Field(description="Jobs by state (every state).")
    paused: bool
    oldest_due_age_ms: int | None = Field(description="Age of the oldest due job; null: none.")


class Worker(BaseModel):
    id: str
    hostname: str
    pid: int
    started_at: str
    heartbeat_at: str
    current_job: str | None
    job_pgid: int | None
    active: bool = Field(description="Heartbeat fresher than the lease.")
    heartbeat_age_ms: int


class Overview(BaseModel):
    store: str = Field(description="The store, as `status` names it (never a secret).")
    now: str
    states: list[str]
    totals: dict[str, int]
    queues: list[QueueRow]
    paused_queues: list[str]
    workers: list[Worker]
    active_workers: int
    stats: list[dict[str, Any]] = Field(description="`queuectl stats --json` rows, last hour.")
    sampled: bool
    series: dict[str, list[Any]] = Field(
        description="Per minute of the last hour: t (epoch s), completed, failed, run_p50_ms, "
                    "run_p95_ms.")


class Stats(BaseModel):
    since: str
    now: str
    sampled: bool
    queues: list[dict[str, Any]]


class JobsPage(BaseModel):
    jobs: list[dict[str, Any]] = Field(description="Newest first.")
    next: str | None = Field(description="Pass as `before` for the next page; null: last page.")


class DeadPage(JobsPage):
    total: int


class Relative(BaseModel):
    id: str
    state: str = Field(description="The job's state; `purged`: a parent no longer stored.")


class JobDetail(BaseModel):
    job: dict[str, Any]
    attempts: list[dict[str, Any]]
    running: bool
    claimable: bool
    parents: list[Relative] = Field(description="The jobs it runs after (`after`).")
    children: list[Relative] = Field(description="The jobs that run after it.")


class Schedule(BaseModel):
    """A schedule as ``queuectl schedule list --json`` prints it."""

    name: str
    cron: str | None
    every: str | None
    cadence: str = Field(description="`cron EXPR (ZONE)` or `every DURATION`.")
    command: str
    queue: str
    priority: int
    timeout: float | None
    cwd: str | None
    max_retries: int | None
    tz: str
    overlap: str = Field(description="skip, queue or allow.")
    catchup: str = Field(description="none, latest or all.")
    paused: bool
    start_at: str
    next_run_at: str
    last_run_at: str | None
    last_job_id: str | None
    queued: list[str] = Field(description="Ticks waiting for the previous job (overlap queue).")
    source: str = Field(description="cli or yaml.")
    created_at: str
    updated_at: str


class Firing(BaseModel):
    schedule: str
    tick: str
    outcome: str = Field(description="fired, skipped (overlap skip) or run (`schedule run`).")
    job_id: str | None
    at: str


class ScheduleDetail(Schedule):
    """A schedule as ``queuectl schedule show --json`` prints it."""

    next_runs: list[str] = Field(description="The next 5 fire times; none while paused.")
    firings: list[Firing] = Field(description="The last 10 firings, newest first.")


class LogTail(BaseModel):
    attempt: int | None
    stream: str
    text: str = Field(description="The end of the output (64 KiB at most), UTF-8, bad bytes "
                                  "replaced.")
    bytes: int = Field(description="The stream's size so far.")
    truncated: bool


class ActionResult(BaseModel):
    ok: bool
    message: str
    jobs: list[dict[str, Any]] = []


class DeadRetry(BaseModel):
    ids: list[str] = []
    all: bool = Field(False, description="Retry every dead job.")
