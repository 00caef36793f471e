"""The data model: jobs, attempts, claims, job specs (what users enqueue) and
the runtime settings shared by every worker of a store.

Records are frozen dataclasses, cheap to import and to build: the CLI's hot
paths (``enqueue``, ``status``) never load pydantic. Everything that comes
from outside is validated strictly where it enters: job specs, settings and
records read from files (``queuectl import``, the JSON store) here, by hand,
with one-line errors; the YAML file and plugin options with pydantic models
(``config_schema``, the plugins' ``options`` modules), loaded only when a
YAML file gives them.

Timestamps are integer epoch milliseconds (UTC) everywhere inside queuectl;
the CLI renders them as ISO-8601.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal, Self, TypeVar

from . import jobspec
from .errors import ConfigError, UsageError
from .jobspec import _env_problem, _is_int, _is_number, _spec_problem
from .timeutil import MAX_EPOCH_MS, iso, now_ms, parse_timestamp_ms, shown

if TYPE_CHECKING:
    from pydantic import ValidationError

# Limits of a job spec, defined with its validation in ``jobspec`` (light, for
# the CLI's fast path) and available here as before.
DEFAULT_QUEUE = jobspec.DEFAULT_QUEUE
MAX_COMMAND_LENGTH = jobspec.MAX_COMMAND_LENGTH
MAX_DELAY_SECONDS = jobspec.MAX_DELAY_SECONDS
MAX_ENV_BYTES = jobspec.MAX_ENV_BYTES
MAX_ENV_ENTRIES = jobspec.MAX_ENV_ENTRIES
MAX_ID_LENGTH = jobspec.MAX_ID_LENGTH
MAX_PATH_LENGTH = jobspec.MAX_PATH_LENGTH
MAX_PRIORITY = jobspec.MAX_PRIORITY
MAX_QUEUE_NAME_LENGTH = jobspec.MAX_QUEUE_NAME_LENGTH
MAX_RETRIES_LIMIT = jobspec.MAX_RETRIES_LIMIT
MAX_TIMEOUT_SECONDS = jobspec.MAX_TIMEOUT_SECONDS
RETRY_KEYS = jobspec.RETRY_KEYS
new_job_id = jobspec.new_job_id
queue_name_problem = jobspec.queue_name_problem
retry_problem = jobspec.retry_problem
#: Smallest non-zero ``output_max_bytes``: half of it is one rotation step.
MIN_OUTPUT_CAP = 4096


class JobState(StrEnum):
    """Where a job is in its life.

    ``pending``: waiting for its ``run_at`` and a free worker.
    ``processing``: claimed by a worker that holds a lease on it.
    ``completed``: its command exited 0 (final).
    ``failed``: an attempt failed and a retry is scheduled at ``run_at``.
    ``dead``: it used up its retries; it sits in the dead letter queue (DLQ)
    until ``dlq retry`` puts it back.
    ``cancelled``: ``queuectl cancel`` stopped it (final).
    """

    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    DEAD = "dead"
    CANCELLED = "cancelled"


#: States from which a worker may claim a job (when ``run_at <= now``).
CLAIMABLE_STATES = (JobState.PENDING, JobState.FAILED)
#: States a job never leaves by itself (``purge`` removes jobs in these).
FINISHED_STATES = (JobState.COMPLETED, JobState.DEAD, JobState.CANCELLED)

#: ``lost``: the worker died or its lease expired (the attempt counts);
#: ``interrupted``: an operator's forced stop killed it (it does not count);
#: ``cancelled``: ``queuectl cancel`` stopped it.
AttemptOutcome = Literal["running", "completed", "failed", "lost", "interrupted", "cancelled"]
ATTEMPT_OUTCOMES = ("running", "completed", "failed", "lost", "interrupted", "cancelled")

R = TypeVar("R", bound="Record")


class Record:
    """Helpers shared by the record dataclasses."""

    __slots__ = ()

    def as_dict(self) -> dict[str, Any]:
        """Field name -> value (shallow; enums stay enums)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    def replace(self, **changes: Any) -> Self:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Job(Record):
    """A job as stored."""

    id: str
    command: str
    state: JobState
    max_retries: int
    run_at: int
    created_at: int
    updated_at: int
    attempts: int = 0
    priority: int = 0
    started_at: int | None = None
    finished_at: int | None = None
    worker_id: str | None = None
    lease_expires_at: int | None = None
    last_error: str | None = None
    exit_code: int | None = None
    queue: str = DEFAULT_QUEUE
    timeout: float | None = None
    cwd: str | None = None
    env: dict[str, str] | None = None
    retry: dict[str, Any] | None = None
    cancel_requested_at: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.state, JobState):
            object.__setattr__(self, "state", JobState(self.state))

    def to_json(self) -> dict[str, Any]:
        """The stable JSON form printed by ``--json`` (ISO-8601 times)."""
        return {
            "id": self.id, "command": self.command, "state": self.state.value,
            "attempts": self.attempts, "max_retries": self.max_retries,
            "priority": self.priority, "run_at": iso(self.run_at),
            "created_at": iso(self.created_at), "updated_at": iso(self.updated_at),
            "started_at": iso(self.started_at), "finished_at": iso(self.finished_at),
            "worker_id": self.worker_id, "lease_expires_at": iso(self.lease_expires_at),
            "last_error": self.last_error, "exit_code": self.exit_code,
            "queue": self.queue, "timeout": self.timeout, "cwd": self.cwd, "env": self.env,
            "retry": self.retry, "cancel_requested_at": iso(self.cancel_requested_at),
        }


JOB_FIELDS = Job.field_names()


@dataclass(frozen=True, slots=True)
class Attempt(Record):
    """One execution of a job: created when a worker claims the job, closed
    when the command finishes or the claim is lost."""

    job_id: str
    number: int
    worker_id: str
    started_at: int
    finished_at: int | None = None
    outcome: AttemptOutcome = "running"
    exit_code: int | None = None
    signal: int | None = None
    error: str | None = None
    stdout_tail: str | None = None
    stderr_tail: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id, "number": self.number, "worker_id": self.worker_id,
            "started_at": iso(self.started_at), "finished_at": iso(self.finished_at),
            "outcome": self.outcome, "exit_code": self.exit_code, "signal": self.signal,
            "error": self.error,
            "duration_ms": (None if self.finished_at is None
                            else self.finished_at - self.started_at),
            "stdout_tail": self.stdout_tail, "stderr_tail": self.stderr_tail,
        }


ATTEMPT_FIELDS = Attempt.field_names()


@dataclass(frozen=True, slots=True)
class Claim(Record):
    """What a worker holds after claiming a job. ``token`` is unique per
    claim; every later state change is conditional on it (fencing).
    ``attempt`` is the number of the attempt record the claim opened: its
    place in the job's whole history (1, 2, 3, ...; it keeps counting after a
    ``dlq retry`` or a forced stop, so it names one run and its log files).
    The retry rule counts ``job.attempts`` instead."""

    job: Job
    token: str
    worker_id: str
    attempt: int
    lease_expires_at: int


@dataclass(frozen=True, slots=True)
class ExecResult(Record):
    """How one execution ended. ``exit_code`` 0 means success."""

    exit_code: int | None = None
    signal: int | None = None
    error: str | None = None
    #: The last part of the attempt's output (at most the ``output_tail_bytes``
    #: setting each), kept in the store so that ``logs`` works from any machine.
    stdout_tail: str | None = None
    stderr_tail: str | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.signal is None


@dataclass(frozen=True, slots=True)
class Outcome(Record):
    """A finished attempt for :meth:`Storage.record_and_claim
    <queuectl_core.storage.Storage.record_and_claim>` to record: completed
    if ``result`` is ok, else failed (again at ``retry_at``, or dead when it
    is None). ``finished_at``: when the command ended (epoch ms; None: the
    time of the call), which may be before the call that records it.
    ``started_at``: when the command started, if later than the claim (a job
    claimed ahead); a backend that overrides ``record_and_claim`` records it
    as the attempt's and the job's ``started_at`` (None: keep the claim's)."""

    claim: Claim
    result: ExecResult
    retry_at: int | None = None
    finished_at: int | None = None
    started_at: int | None = None

    def at(self, now: int) -> int:
        """The attempt's ``finished_at`` when recorded at ``now``."""
        return now if self.finished_at is None else self.finished_at

    @property
    def completed(self) -> bool:
        return self.result.ok

    @property
    def state(self) -> JobState:
        """The state it leaves the job in (unless a cancel was requested)."""
        if self.completed:
            return JobState.COMPLETED
        return JobState.FAILED if self.retry_at is not None else JobState.DEAD

    @property
    def attempt_outcome(self) -> AttemptOutcome:
        """How it closes the attempt (unless a cancel was requested)."""
        return "completed" if self.completed else "failed"


@dataclass(frozen=True, slots=True)
class NewJob(Record):
    """A validated job ready to store (defaults filled in)."""

    id: str
    command: str
    max_retries: int
    run_at: int
    created_at: int
    priority: int = 0
    queue: str = DEFAULT_QUEUE
    timeout: float | None = None
    cwd: str | None = None
    env: dict[str, str] | None = None
    retry: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class WorkerInfo(Record):
    """A worker process as registered in the store."""

    id: str
    hostname: str
    pid: int
    started_at: int
    heartbeat_at: int
    current_job: str | None = None
    job_pgid: int | None = None

    def to_json(self) -> dict[str, Any]:
        data = self.as_dict()
        data["started_at"] = iso(self.started_at)
        data["heartbeat_at"] = iso(self.heartbeat_at)
        return data


# ------------------------------------------------------------------ job specs

@dataclass(frozen=True, slots=True)
class JobSpec(Record):
    """What a user may enqueue. Types are strict: ``"max_retries": "3"`` is an
    error, not coerced; unknown fields are rejected (see parse_job_spec)."""

    command: str
    id: str | None = None
    run_at: int | str | None = None
    max_retries: int | None = None
    priority: int = 0
    queue: str = DEFAULT_QUEUE
    timeout: float | None = None
    cwd: str | None = None
    env: dict[str, str] | None = None
    retry: dict[str, Any] | None = None

    def to_new_job(self, *, default_max_retries: int, now: int | None = None,
                   base_dir: str | None = None) -> NewJob:
        """The job to store. ``base_dir`` (the directory ``enqueue`` runs in)
        becomes the job's ``cwd`` when it gives none, and anchors a relative
        one."""
        created = now_ms() if now is None else now
        run_at = created if self.run_at is None else parse_timestamp_ms(self.run_at)
        cwd = self.cwd
        if base_dir is not None:
            import os.path

            cwd = base_dir if cwd is None else os.path.normpath(os.path.join(base_dir, cwd))
        return NewJob(
            id=self.id if self.id is not None else new_job_id(),
            command=self.command,
            max_retries=default_max_retries if self.max_retries is None else self.max_retries,
            priority=self.priority,
            run_at=run_at,
            created_at=created,
            queue=self.queue,
            timeout=self.timeout,
            cwd=cwd,
            env=self.env,
            retry=self.retry,
        )


def job_problem(job: Job) -> str | None:
    """What enqueue would reject in a stored-looking job (for ``import``)."""
    problem = _spec_problem({"id": job.id, "command": job.command,
                             "max_retries": job.max_retries, "priority": job.priority,
                             "queue": job.queue, "timeout": job.timeout, "cwd": job.cwd,
                             "env": job.env, "retry": job.retry})
    if problem is not None:
        return problem
    if not 0 <= job.attempts <= MAX_RETRIES_LIMIT + 1:
        return f"attempts: must be from 0 to {MAX_RETRIES_LIMIT + 1}"
    for key in ("run_at", "created_at", "updated_at", "started_at", "finished_at",
                "lease_expires_at", "cancel_requested_at"):
        value = getattr(job, key)
        if value is not None and not 0 <= value <= MAX_EPOCH_MS:
            return f"{key}: out of range"
    return None


def parse_job_spec(data: object) -> JobSpec:
    """Validate one decoded JSON value as a job spec (raises UsageError)."""
    if not isinstance(data, dict):
        raise UsageError("a job must be a JSON object, e.g. {\"command\": \"echo hi\"}")
    problem = _spec_problem(data)
    if problem is not None:
        raise UsageError(f"invalid job: {problem}")
    timeout = data.get("timeout")
    return JobSpec(command=data["command"], id=data.get("id"), run_at=data.get("run_at"),
                   max_retries=data.get("max_retries"), priority=data.get("priority", 0),
                   queue=data.get("queue", DEFAULT_QUEUE),
                   timeout=None if timeout is None else float(timeout),
                   cwd=data.get("cwd"), env=data.get("env"), retry=data.get("retry"))


def validation_message(exc: ValidationError) -> str:
    """One line describing the first problem pydantic found (for the YAML
    file and plugin options, validated with pydantic)."""
    errors = exc.errors()
    err = errors[0]
    loc = ".".join(str(p) for p in err["loc"] if not isinstance(p, int)) or "value"
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown field"
    elif err["type"] == "missing":
        msg = "is required"
    extra = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    return f"{loc}: {msg}{extra}"


# ---------------------------------------------------------------- settings

@dataclass(frozen=True, slots=True)
class SettingSpec:
    kind: type[int] | type[float]
    default: int | float
    low: int | float
    high: int | float
    description: str


#: Runtime settings, stored in the backend so that every worker sharing a
#: store sees them and picks up changes without a restart.
SETTING_SPECS: dict[str, SettingSpec] = {
    "max_retries": SettingSpec(int, 3, 0, MAX_RETRIES_LIMIT,
                               "retries after the first attempt before a job is dead"),
    "backoff_base": SettingSpec(float, 2.0, 1.0, 1000.0,
                                "retry delay in seconds: backoff_base ** attempts "
                                "(exponential), backoff_base * attempts (linear), or "
                                "backoff_base (constant)"),
    "worker_idle_delay": SettingSpec(int, 2000, 1, 3_600_000,
                                     "ms an idle worker waits between polls (at most)"),
    "lease_seconds": SettingSpec(int, 15, 3, 86_400,
                                 "seconds a claim stays valid without a heartbeat"),
    "max_delay": SettingSpec(float, 0.0, 0.0, MAX_DELAY_SECONDS,
                             "longest retry delay in seconds (0: no cap)"),
    "jitter": SettingSpec(float, 0.0, 0.0, 1.0,
                          "each retry delay is cut by a random fraction up to this"),
    "job_timeout": SettingSpec(float, 0.0, 0.0, MAX_TIMEOUT_SECONDS,
                               "seconds a job without its own timeout may run (0: no limit)"),
    "output_max_bytes": SettingSpec(int, 10 * 1024 * 1024, 0, 2**40,
                                    "cap on each attempt's stdout and on its stderr on disk; "
                                    "the newest output is kept (0: no cap, else at least "
                                    "4096)"),
    "output_tail_bytes": SettingSpec(int, 4096, 0, 1024 * 1024,
                                     "bytes of each attempt's stdout and stderr kept in the "
                                     "store, for `logs` on any machine"),
    "retention_days": SettingSpec(float, 0.0, 0.0, 36_500.0,
                                  "completed and cancelled jobs are purged this many days "
                                  "after they finish, with their logs (0: kept)"),
}
SETTING_KEYS = tuple(SETTING_SPECS)


@dataclass(frozen=True, slots=True)
class Settings(Record):
    """Effective runtime settings (see SETTING_SPECS for ranges)."""

    max_retries: int = 3
    backoff_base: float = 2.0
    worker_idle_delay: int = 2000
    lease_seconds: int = 15
    max_delay: float = 0.0
    jitter: float = 0.0
    job_timeout: float = 0.0
    output_max_bytes: int = 10 * 1024 * 1024
    output_tail_bytes: int = 4096
    retention_days: float = 0.0


def check_setting(key: str, value: object) -> int | float:
    """Validate one (normalized) setting value; returns it, as a float for
    float settings. Raises ConfigError with a one-line message."""
    spec = SETTING_SPECS[key]
    if spec.kind is int:
        if not _is_int(value):
            raise ConfigError(f"{key}: {value!r} is not a whole number")
    else:
        if type(value) not in (int, float) or not math.isfinite(value):  # type: ignore[arg-type]
            raise ConfigError(f"{key}: {value!r} is not a finite number")
        value = float(value)  # type: ignore[arg-type]
    assert isinstance(value, int | float)
    if not spec.low <= value <= spec.high:
        raise ConfigError(f"{key}: must be from {spec.low:g} to {spec.high:g}, got {value:g}")
    if key == "output_max_bytes" and 0 < value < MIN_OUTPUT_CAP:
        raise ConfigError(f"{key}: must be 0 (no cap) or at least {MIN_OUTPUT_CAP}, "
                          f"got {value:g}")
    return value


def normalize_setting_key(key: str) -> str:
    """``max-retries`` and ``max_retries`` name the same key."""
    norm = key.strip().lower().replace("-", "_")
    if norm not in SETTING_SPECS:
        raise ConfigError(f"unknown setting {key!r}; choose one of: {', '.join(SETTING_KEYS)}")
    return norm


def parse_setting_value(key: str, text: str) -> int | float:
    """Parse a value typed on the command line for a (normalized) key."""
    spec = SETTING_SPECS[key]
    raw = text.strip()
    try:
        value: int | float = int(raw, 10) if spec.kind is int else float(raw)
    except ValueError:
        kind = "a whole number" if spec.kind is int else "a finite number"
        raise ConfigError(f"{key}: {text!r} is not {kind}") from None
    return check_setting(key, value)


def settings_from_stored(stored: dict[str, Any], defaults: dict[str, Any] | None = None
                         ) -> Settings:
    """Effective settings: stored values override ``defaults`` (from YAML),
    which override the built-in defaults. Unknown stored keys are ignored so
    that an older queuectl can read a store written by a newer one."""
    merged: dict[str, Any] = {}
    for source, where in ((defaults or {}, "YAML defaults"), (stored, "stored setting")):
        for key, value in source.items():
            if key in SETTING_SPECS:
                try:
                    merged[key] = check_setting(key, value)
                except ConfigError as exc:
                    raise ConfigError(f"invalid {where}: {exc}") from None
    return Settings(**merged)


# ------------------------------------------------------- record validation

def _check_field(annotation: str, value: object) -> object:
    """Check one value against a record field's annotation (strict types);
    returns the value (enums converted). Raises ValueError."""
    optional = annotation.endswith(" | None")
    base = annotation.removesuffix(" | None")
    if value is None:
        if optional:
            return None
        raise ValueError("must not be null")
    if base == "int":
        if not _is_int(value):
            raise ValueError("must be an integer")
        if not -(2**63) <= value < 2**63:  # type: ignore[operator]
            raise ValueError("is out of range")
        return value
    if base == "str":
        if type(value) is not str:
            raise ValueError("must be a string")
        return value
    if base == "JobState":
        if value not in JobState.__members__.values():
            raise ValueError(f"must be one of: {', '.join(s.value for s in JobState)}")
        return JobState(value)  # type: ignore[arg-type]
    if base == "float":
        if not _is_number(value):
            raise ValueError("must be a finite number")
        return float(value)  # type: ignore[arg-type]
    if base == "dict[str, str]":
        problem = _env_problem(value)
        if problem is not None:
            raise ValueError(problem.removeprefix("env").lstrip(":. "))
        return dict(value)  # type: ignore[call-overload]
    if base == "dict[str, Any]":
        problem = retry_problem(value)
        if problem is not None:
            raise ValueError(problem.removeprefix("retry").lstrip(":. "))
        return dict(value)  # type: ignore[call-overload]
    if base == "AttemptOutcome":
        if value not in ATTEMPT_OUTCOMES:
            raise ValueError(f"must be one of: {', '.join(ATTEMPT_OUTCOMES)}")
        return value
    raise ValueError(f"unsupported field type {annotation}")  # pragma: no cover


def record_from_dict(cls: type[R], data: object) -> R:
    """Build a Job, Attempt or WorkerInfo from untrusted data (a file being
    imported, a store read from disk), strictly: no unknown or missing
    fields, exact types. Raises ValueError naming the field."""
    if not isinstance(data, dict):
        raise ValueError("expected an object")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for key in data:
        if key not in fields:
            raise ValueError(f"{shown(str(key))}: unknown field")
    values: dict[str, object] = {}
    for name, f in fields.items():
        if name not in data:
            if f.default is dataclasses.MISSING:
                raise ValueError(f"{name}: is required")
            continue
        try:
            values[name] = _check_field(str(f.type), data[name])
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
    return cls(**values)
