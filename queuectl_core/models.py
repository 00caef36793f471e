"""The data model: jobs, attempts, job specs (what users enqueue) and the
runtime settings shared by every worker of a store.

Timestamps are integer epoch milliseconds (UTC) everywhere inside queuectl;
the CLI renders them as ISO-8601.
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import ConfigError, UsageError
from .timeutil import iso, now_ms, parse_timestamp_ms

MAX_ID_LENGTH = 255
MAX_COMMAND_LENGTH = 1_000_000
MAX_PRIORITY = 1_000_000_000
MAX_RETRIES_LIMIT = 10_000


class JobState(StrEnum):
    """Where a job is in its life.

    ``pending``: waiting for its ``run_at`` and a free worker.
    ``processing``: claimed by a worker that holds a lease on it.
    ``completed``: its command exited 0 (final).
    ``failed``: an attempt failed and a retry is scheduled at ``run_at``.
    ``dead``: it used up its retries; it sits in the dead letter queue (DLQ)
    until ``dlq retry`` puts it back.
    """

    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    DEAD = "dead"


#: States from which a worker may claim a job (when ``run_at <= now``).
CLAIMABLE_STATES = (JobState.PENDING, JobState.FAILED)

#: ``lost``: the worker died or its lease expired (the attempt counts);
#: ``interrupted``: an operator's forced stop killed it (it does not count).
AttemptOutcome = Literal["running", "completed", "failed", "lost", "interrupted"]


class Job(BaseModel):
    """A job as stored."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    id: str
    command: str
    state: JobState
    attempts: int = 0
    max_retries: int
    priority: int = 0
    run_at: int
    created_at: int
    updated_at: int
    started_at: int | None = None
    finished_at: int | None = None
    worker_id: str | None = None
    lease_expires_at: int | None = None
    last_error: str | None = None
    exit_code: int | None = None

    def to_json(self) -> dict[str, Any]:
        """The stable JSON form printed by ``--json`` (ISO-8601 times)."""
        data = self.model_dump()
        data["state"] = self.state.value
        for key in ("run_at", "created_at", "updated_at", "started_at", "finished_at",
                    "lease_expires_at"):
            data[key] = iso(data[key])
        return data


class Attempt(BaseModel):
    """One execution of a job: created when a worker claims the job, closed
    when the command finishes or the claim is lost."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    job_id: str
    number: int
    worker_id: str
    started_at: int
    finished_at: int | None = None
    outcome: AttemptOutcome = "running"
    exit_code: int | None = None
    signal: int | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        data = self.model_dump()
        data["started_at"] = iso(self.started_at)
        data["finished_at"] = iso(self.finished_at)
        data["duration_ms"] = (
            None if self.finished_at is None else self.finished_at - self.started_at
        )
        return data


class Claim(BaseModel):
    """What a worker holds after claiming a job. ``token`` is unique per
    claim; every later state change is conditional on it (fencing)."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    job: Job
    token: str
    worker_id: str
    attempt: int
    lease_expires_at: int


class ExecResult(BaseModel):
    """How one execution ended. ``exit_code`` 0 means success."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    exit_code: int | None = None
    signal: int | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.signal is None


class NewJob(BaseModel):
    """A validated job ready to store (defaults filled in)."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    id: str
    command: str
    max_retries: int
    priority: int = 0
    run_at: int
    created_at: int


class JobSpec(BaseModel):
    """What a user may enqueue. Types are strict: ``"max_retries": "3"`` is an
    error, not coerced; unknown fields are rejected."""

    model_config = ConfigDict(strict=True, extra="forbid", defer_build=True)

    id: str | None = Field(default=None, min_length=1, max_length=MAX_ID_LENGTH)
    command: str = Field(min_length=1, max_length=MAX_COMMAND_LENGTH)
    run_at: int | str | None = None
    max_retries: int | None = Field(default=None, ge=0, le=MAX_RETRIES_LIMIT)
    priority: int = Field(default=0, ge=-MAX_PRIORITY, le=MAX_PRIORITY)

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str | None) -> str | None:
        if value is not None and (value != value.strip() or not value.isprintable()):
            raise ValueError(
                "must be printable text without leading/trailing spaces or control characters"
            )
        return value

    @field_validator("command")
    @classmethod
    def _check_command(cls, value: str) -> str:
        if "\x00" in value:
            raise ValueError("must not contain NUL characters")
        if not value.strip():
            raise ValueError("must not be blank")
        return value

    def to_new_job(self, *, default_max_retries: int, now: int | None = None) -> NewJob:
        created = now_ms() if now is None else now
        run_at = created if self.run_at is None else parse_timestamp_ms(self.run_at)
        return NewJob(
            id=self.id if self.id is not None else new_job_id(),
            command=self.command,
            max_retries=default_max_retries if self.max_retries is None else self.max_retries,
            priority=self.priority,
            run_at=run_at,
            created_at=created,
        )


def new_job_id() -> str:
    import uuid

    return uuid.uuid4().hex[:12]


def validation_message(exc: ValidationError) -> str:
    """One line describing the first problem pydantic found."""
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"] if not isinstance(p, int)) or "value"
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown field"
    elif err["type"] == "missing":
        msg = "is required"
    extra = f" (and {len(exc.errors()) - 1} more problem(s))" if len(exc.errors()) > 1 else ""
    return f"{loc}: {msg}{extra}"


def parse_job_spec(data: object) -> JobSpec:
    """Validate one decoded JSON value as a job spec (raises UsageError)."""
    if not isinstance(data, dict):
        raise UsageError("a job must be a JSON object, e.g. {\"command\": \"echo hi\"}")
    # pydantic's union of int|str would accept run_at as either; the smart
    # union still needs strictness for ints, which ConfigDict(strict) gives.
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        raise UsageError(f"invalid job: {validation_message(exc)}") from None


# ---------------------------------------------------------------- settings

class Settings(BaseModel):
    """Runtime settings, stored in the backend so that every worker sharing a
    store sees them and picks up changes without a restart."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, defer_build=True)

    max_retries: int = Field(default=3, ge=0, le=MAX_RETRIES_LIMIT,
                             description="retries after the first attempt before a job is dead")
    backoff_base: float = Field(default=2.0, ge=1.0, le=1000.0,
                                description="retry delay is backoff_base ** attempts seconds")
    worker_idle_delay: int = Field(default=2000, ge=1, le=3_600_000,
                                   description="ms an idle worker waits between polls (at most)")
    lease_seconds: int = Field(default=15, ge=3, le=86_400,
                               description="seconds a claim stays valid without a heartbeat")

    @field_validator("backoff_base")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value


SETTING_KEYS = tuple(Settings.model_fields)


def normalize_setting_key(key: str) -> str:
    """``max-retries`` and ``max_retries`` name the same key."""
    norm = key.strip().lower().replace("-", "_")
    if norm not in Settings.model_fields:
        raise ConfigError(f"unknown setting {key!r}; choose one of: {', '.join(SETTING_KEYS)}")
    return norm


def parse_setting_value(key: str, text: str) -> int | float:
    """Parse a value typed on the command line for a (normalized) key."""
    annotation = Settings.model_fields[key].annotation
    raw = text.strip()
    value: int | float
    try:
        value = int(raw, 10) if annotation is int else float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        kind = "a whole number" if annotation is int else "a finite number"
        raise ConfigError(f"{key}: {text!r} is not {kind}")
    try:
        Settings.model_validate({key: value})
    except ValidationError as exc:
        raise ConfigError(f"{key}: {exc.errors()[0]['msg']}") from None
    return value


def settings_from_stored(stored: dict[str, Any], defaults: dict[str, Any] | None = None
                         ) -> Settings:
    """Effective settings: stored values override ``defaults`` (from YAML),
    which override the built-in defaults. Unknown stored keys are ignored so
    that an older queuectl can read a store written by a newer one."""
    merged: dict[str, Any] = {}
    merged.update(defaults or {})
    merged.update({k: v for k, v in stored.items() if k in Settings.model_fields})
    try:
        return Settings.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(f"invalid stored setting: {validation_message(exc)}") from None


class WorkerInfo(BaseModel):
    """A worker process as registered in the store."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    id: str
    hostname: str
    pid: int
    started_at: int
    heartbeat_at: int
    current_job: str | None = None
    job_pgid: int | None = None

    def to_json(self) -> dict[str, Any]:
        data = self.model_dump()
        data["started_at"] = iso(self.started_at)
        data["heartbeat_at"] = iso(self.heartbeat_at)
        return data
