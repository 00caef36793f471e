"""The records: jobs, attempts, claims, results and workers.

Each record's fields are declared once, here, with metadata that says how a
value is checked (``check``), whether it is a time (epoch ms inside
queuectl, ISO-8601 in JSON), an object stored as JSON text (``json``), or
internal to the stores (``internal``: never printed or exported).
``to_json``, :func:`record_from_dict` (untrusted input: ``import`` files,
files read back by the JSON store), the stores' column lists and export
all come from these declarations.

The records are :class:`~queuectl_core.records.Record` classes (frozen,
declared like dataclasses), cheap to define: the CLI's hot paths
(``enqueue``, ``status``) load neither pydantic nor dataclasses
(docs/architecture.md).
"""

from __future__ import annotations

import math
import os.path
from enum import StrEnum

from .errors import shown
from .jobspec import env_problem, new_job_id, retry_in_seconds, retry_problem, spec_problem
from .limits import DEFAULT_QUEUE, MAX_EPOCH_MS, MAX_RETRIES_LIMIT
from .records import MISSING, Record, field
from .timeutil import iso, parse_run_at_ms

# typing is not imported at run time (the CLI's hot path).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any, Literal, TypeVar

    R = TypeVar("R", bound="Entry")


class JobState(StrEnum):
    """Where a job is in its life.

    ``pending``: waiting for its ``run_at`` and a free worker.
    ``processing``: claimed by a worker that holds a lease on it.
    ``completed``: its command exited 0 (final).
    ``failed``: an attempt failed and a retry is scheduled at ``run_at``.
    ``dead``: it used up its retries; it sits in the dead letter queue (DLQ)
    until ``dlq retry`` puts it back.
    ``cancelled``: ``queuectl cancel`` stopped it (final).
    ``waiting``: it runs after other jobs (``after``) that have not all
    finished yet; never claimed until they have.
    ``skipped``: a job it runs after ended in a way that rules it out (dead,
    cancelled or skipped, under ``after_mode`` success); final, but a ``dlq
    retry`` of that job waits for it again.
    """

    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    DEAD = "dead"
    CANCELLED = "cancelled"
    WAITING = "waiting"
    SKIPPED = "skipped"


#: States from which a worker may claim a job (when ``run_at <= now``).
CLAIMABLE_STATES = (JobState.PENDING, JobState.FAILED)
#: States a job never leaves by itself (``purge`` removes jobs in these).
FINISHED_STATES = (JobState.COMPLETED, JobState.DEAD, JobState.CANCELLED, JobState.SKIPPED)
#: States that hold a job's ``unique_key``: another job with that key is
#: refused while one is in these.
UNFINISHED_STATES = (JobState.PENDING, JobState.WAITING, JobState.PROCESSING, JobState.FAILED)
#: ``after_mode``: run once every parent completed (``success``), or once
#: every parent is final, whatever its outcome (``finished``).
AFTER_MODES = ("success", "finished")

#: ``lost``: the worker died or its lease expired (the attempt counts);
#: ``interrupted``: an operator's forced stop killed it (it does not count);
#: ``cancelled``: ``queuectl cancel`` stopped it.
if TYPE_CHECKING:
    AttemptOutcome = Literal["running", "completed", "failed", "lost", "interrupted",
                             "cancelled"]
ATTEMPT_OUTCOMES = ("running", "completed", "failed", "lost", "interrupted", "cancelled")


# ------------------------------------------------------------ field checks
#
# Each returns the value to store (an enum converted) or raises ValueError
# with the problem, without the field's name.

def _int(value: object) -> int:
    if type(value) is not int:  # bool is not an int here, nor is 3.0
        raise ValueError("must be an integer")
    if not -(2**63) <= value < 2**63:
        raise ValueError("is out of range")
    return value


def _str(value: object) -> str:
    if type(value) is not str:
        raise ValueError("must be a string")
    return value


def _float(value: object) -> float:
    if type(value) not in (int, float) or not math.isfinite(value):  # type: ignore[arg-type]
        raise ValueError("must be a finite number")
    return float(value)  # type: ignore[arg-type]


def _state(value: object) -> JobState:
    if value not in JobState.__members__.values():
        raise ValueError(f"must be one of: {', '.join(s.value for s in JobState)}")
    return JobState(str(value))


def _ids(value: object) -> list[str]:
    if not isinstance(value, list) or not all(type(v) is str for v in value):
        raise ValueError("must be a list of job ids")
    return list(value)


def _after_mode(value: object) -> str:
    if value not in AFTER_MODES:
        raise ValueError(f"must be one of: {', '.join(AFTER_MODES)}")
    return str(value)


def _outcome(value: object) -> str:
    if value not in ATTEMPT_OUTCOMES:
        raise ValueError(f"must be one of: {', '.join(ATTEMPT_OUTCOMES)}")
    return str(value)


def _env(value: object) -> dict[str, str]:
    problem = env_problem(value)
    if problem is not None:
        raise ValueError(problem.removeprefix("env").lstrip(":. "))
    assert isinstance(value, dict)
    return {str(k): str(v) for k, v in value.items()}


def _retry(value: object) -> dict[str, Any]:
    problem = retry_problem(value)
    if problem is not None:
        raise ValueError(problem.removeprefix("retry").lstrip(":. "))
    assert isinstance(value, dict)
    return {str(k): v for k, v in retry_in_seconds(value).items()}


def _field(check: Callable[[object], Any], default: Any = MISSING, *, time: bool = False,
           json: bool = False, internal: bool = False) -> Any:
    """A record field: how its value is checked, and how it is shown."""
    return field(default, meta={"check": check, "time": time, "json": json,
                                "internal": internal})


class Entry(Record):
    """What the stored records (jobs, attempts, workers) derive from their
    field declarations."""

    @classmethod
    def public_fields(cls) -> tuple[str, ...]:
        """The fields printed by ``--json`` and exported (not ``internal``)."""
        return tuple(f.name for f in cls.record_fields() if not f.meta.get("internal"))

    @classmethod
    def time_fields(cls) -> tuple[str, ...]:
        return tuple(f.name for f in cls.record_fields() if f.meta.get("time"))

    @classmethod
    def json_fields(cls) -> tuple[str, ...]:
        """Fields holding an object (a store keeps them as JSON text)."""
        return tuple(f.name for f in cls.record_fields() if f.meta.get("json"))

    def to_json(self) -> dict[str, Any]:
        """The stable JSON form printed by ``--json`` (ISO-8601 times)."""
        out: dict[str, Any] = {}
        for f in self.record_fields():
            if f.meta.get("internal"):
                continue
            value = getattr(self, f.name)
            if f.meta.get("time"):
                value = iso(value)
            elif isinstance(value, StrEnum):
                value = value.value
            out[f.name] = value
        return out


class Job(Entry, kw_only=True):
    """A job as stored. Fields are in the order ``--json`` prints them."""

    id: str = _field(_str)
    command: str = _field(_str)
    state: JobState = _field(_state)
    attempts: int = _field(_int, 0)
    max_retries: int = _field(_int)
    priority: int = _field(_int, 0)
    run_at: int = _field(_int, time=True)
    created_at: int = _field(_int, time=True)
    updated_at: int = _field(_int, time=True)
    started_at: int | None = _field(_int, None, time=True)
    finished_at: int | None = _field(_int, None, time=True)
    worker_id: str | None = _field(_str, None)
    lease_expires_at: int | None = _field(_int, None, time=True)
    last_error: str | None = _field(_str, None)
    exit_code: int | None = _field(_int, None)
    queue: str = _field(_str, DEFAULT_QUEUE)
    timeout: float | None = _field(_float, None)
    cwd: str | None = _field(_str, None)
    env: dict[str, str] | None = _field(_env, None, json=True)
    retry: dict[str, Any] | None = _field(_retry, None, json=True)
    cancel_requested_at: int | None = _field(_int, None, time=True)
    #: The jobs this one runs after (dependencies), and how.
    after: list[str] | None = _field(_ids, None, json=True)
    after_mode: str | None = _field(_after_mode, None)
    #: At most ``limit set KEY N`` jobs with this key run at once (1 if unset).
    concurrency_key: str | None = _field(_str, None)
    #: No two unfinished jobs share it.
    unique_key: str | None = _field(_str, None)
    #: How many of ``after`` the job still waits for (``waiting`` only).
    waiting_on: int = _field(_int, 0, internal=True)
    #: How many jobs name this one in their ``after``: part of every
    #: change's fence, so that a job enqueued after this one is never missed
    #: when this one finishes.
    dependents: int = _field(_int, 0, internal=True)
    #: The recurring schedule that made the job and the tick it was made for
    #: (None for other jobs; see queuectl_core/schedules.py).
    schedule: str | None = _field(_str, None)
    scheduled_for: int | None = _field(_int, None, time=True)
    #: The token of the claim that holds the job (None unless processing):
    #: every change after a claim is conditional on it (fencing).
    claim_token: str | None = _field(_str, None, internal=True)

    def __post_init__(self) -> None:
        if not isinstance(self.state, JobState):
            object.__setattr__(self, "state", JobState(self.state))

    @classmethod
    def new(cls, *, id: str, command: str, max_retries: int, run_at: int, created_at: int,
            priority: int = 0, queue: str = DEFAULT_QUEUE, timeout: float | None = None,
            cwd: str | None = None, env: dict[str, str] | None = None,
            retry: dict[str, Any] | None = None, after: list[str] | None = None,
            after_mode: str | None = None, concurrency_key: str | None = None,
            unique_key: str | None = None) -> Job:
        """A new job, ``pending`` (its dependencies are settled when it is
        stored: ``dependencies.placed``), as ``enqueue`` makes it."""
        return cls._with_defaults({
            "id": id, "command": command, "state": JobState.PENDING,
            "max_retries": max_retries, "priority": priority, "run_at": run_at,
            "created_at": created_at, "updated_at": created_at, "queue": queue,
            "timeout": timeout, "cwd": cwd, "env": env, "retry": retry, "after": after,
            "after_mode": (after_mode or "success") if after else None,
            "concurrency_key": concurrency_key, "unique_key": unique_key})


def spec_to_job(spec: dict[str, Any], *, default_max_retries: int, now: int,
                base_dir: str | None) -> Job:
    """The job to store for a valid job spec (``jobspec.parse_job_spec``).
    ``base_dir`` (the directory ``enqueue`` runs in) becomes the job's
    ``cwd`` when it gives none, and anchors a relative one. Raises
    UsageError for a bad ``run_at``."""
    run_at = spec.get("run_at")
    cwd = spec.get("cwd")
    if base_dir is not None:
        cwd = base_dir if cwd is None else os.path.normpath(os.path.join(base_dir, cwd))
    max_retries = spec.get("max_retries")
    timeout = spec.get("timeout")
    job_id = spec.get("id")
    when = now if run_at is None else parse_run_at_ms(run_at)
    return Job.new(
        id=new_job_id() if job_id is None else job_id,
        command=spec["command"],
        max_retries=default_max_retries if max_retries is None else max_retries,
        priority=spec.get("priority", 0),
        run_at=when,
        created_at=now,
        queue=spec.get("queue", DEFAULT_QUEUE),
        timeout=None if timeout is None else float(timeout),
        cwd=cwd,
        env=spec.get("env"),
        retry=spec.get("retry"),
        after=spec.get("after") or None,
        after_mode=spec.get("after_mode"),
        concurrency_key=spec.get("concurrency_key"),
        unique_key=spec.get("unique_key"),
    )


def job_problem(job: Job) -> str | None:
    """What enqueue would reject in a stored-looking job (for ``import``)."""
    problem = spec_problem({"id": job.id, "command": job.command,
                            "max_retries": job.max_retries, "priority": job.priority,
                            "queue": job.queue, "timeout": job.timeout, "cwd": job.cwd,
                            "env": job.env, "retry": job.retry})
    if problem is not None:
        return problem
    if not 0 <= job.attempts <= MAX_RETRIES_LIMIT + 1:
        return f"attempts: must be from 0 to {MAX_RETRIES_LIMIT + 1}"
    for key in job.time_fields():
        value = getattr(job, key)
        if value is not None and not 0 <= value <= MAX_EPOCH_MS:
            return f"{key}: out of range"
    return None


JOB_FIELDS = Job.field_names()


class Attempt(Entry, kw_only=True):
    """One execution of a job: opened when a worker claims the job, closed
    when the command finishes or the claim is lost."""

    job_id: str = _field(_str)
    number: int = _field(_int)
    worker_id: str = _field(_str)
    started_at: int = _field(_int, time=True)
    finished_at: int | None = _field(_int, None, time=True)
    outcome: AttemptOutcome = _field(_outcome, "running")
    exit_code: int | None = _field(_int, None)
    signal: int | None = _field(_int, None)
    error: str | None = _field(_str, None)
    stdout_tail: str | None = _field(_str, None)
    stderr_tail: str | None = _field(_str, None)

    def to_json(self) -> dict[str, Any]:
        data = Entry.to_json(self)
        tails = {k: data.pop(k) for k in ("stdout_tail", "stderr_tail")}
        data["duration_ms"] = (None if self.finished_at is None
                               else self.finished_at - self.started_at)
        data.update(tails)
        return data


ATTEMPT_FIELDS = Attempt.field_names()


class Claim(Record):
    """What a worker holds after claiming a job. ``token`` is unique per
    claim (the job's ``claim_token``); every later change is conditional on
    it (fencing). ``attempt`` is the number of the attempt record the claim
    opened: its place in the job's whole history (1, 2, 3, ...; it keeps
    counting after a ``dlq retry`` or a forced stop, so it names one run and
    its log files). The retry rule counts ``job.attempts`` instead."""

    job: Job
    token: str
    worker_id: str
    attempt: int
    lease_expires_at: int


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


class Outcome(Record):
    """A finished attempt to record: completed if ``result`` is ok, else
    failed (again at ``retry_at``, or dead when it is None; cancelled if a
    cancel was requested). ``finished_at``: when the command ended (epoch
    ms; None: the time of the call), which may be before the call that
    records it. ``started_at``: when the command started, if later than the
    claim (a job claimed ahead; None: keep the claim's)."""

    claim: Claim
    result: ExecResult
    retry_at: int | None = None
    finished_at: int | None = None
    started_at: int | None = None
    #: Completed (True) or failed (False) whatever ``result`` says; None: as
    #: ``result.ok`` says (what a worker records).
    ok: bool | None = None

    def at(self, now: int) -> int:
        """The attempt's ``finished_at`` when recorded at ``now``."""
        return now if self.finished_at is None else self.finished_at

    @property
    def completed(self) -> bool:
        return self.result.ok if self.ok is None else self.ok


class FinishedAttempt(Record, kw_only=True):
    """One finished attempt, with what ``stats`` needs of its job
    (``Storage.finished_attempts``)."""

    job_id: str
    queue: str
    command: str
    outcome: str
    started_at: int
    finished_at: int
    exit_code: int | None = None
    #: The job's due time (``run_at``), known for completed attempts.
    due_at: int | None = None


class WorkerInfo(Entry, kw_only=True):
    """A worker process as registered in the store."""

    id: str = _field(_str)
    hostname: str = _field(_str)
    pid: int = _field(_int)
    started_at: int = _field(_int, time=True)
    heartbeat_at: int = _field(_int, time=True)
    current_job: str | None = _field(_str, None)
    job_pgid: int | None = _field(_int, None)


def record_from_dict(cls: type[R], data: object) -> R:
    """Build a record from untrusted data (a file being imported, a store
    read from disk), strictly: no unknown or missing fields, exact types,
    by each field's declared check. Raises ValueError naming the field."""
    if not isinstance(data, dict):
        raise ValueError("expected an object")
    fields = {f.name: f for f in cls.record_fields()}
    for key in data:
        if key not in fields:
            raise ValueError(f"{shown(str(key))}: unknown field")
    values: dict[str, object] = {}
    for name, f in fields.items():
        if name not in data:
            if f.required:
                raise ValueError(f"{name}: is required")
            continue
        value = data[name]
        if value is None:
            if f.default is not None:
                raise ValueError(f"{name}: must not be null")
            values[name] = None
            continue
        try:
            values[name] = f.meta["check"](value)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
    return cls(**values)


def validation_message(exc: Any) -> str:
    """One line describing the first problem pydantic found (a
    ``pydantic.ValidationError``: the YAML file, plugin options)."""
    errors = exc.errors()
    err = errors[0]
    loc = ".".join(str(p) for p in err["loc"] if not isinstance(p, int)) or "value"
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown field"
    elif err["type"] == "value_error" and "error" in err.get("ctx", {}):
        msg = str(err["ctx"]["error"])
    elif err["type"] == "missing":
        msg = "is required"
    extra = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    return f"{loc}: {msg}{extra}"


# ------------------------------------------------------------ changes

class AttemptChange(Record):
    """What a change does to the attempt a claim opened (identified by the
    claim's ``token``; while the job holds that token it is the job's
    latest attempt): ``open`` it (a claim), set ``fields`` on it (closing
    it), or ``drop`` it (a claim given back as if never made)."""

    token: str
    open: Attempt | None = None
    fields: Mapping[str, Any] = field(default_factory=dict)
    drop: bool = False


class Change(Record):
    """One job's change, as the core decided it (``transitions``), for a
    store to make if and only if the job is still as the decision saw it:
    every field in ``expect`` still has that value (compare-and-set).

    ``fields``: job fields to set (any field of :class:`Job`, including
    ``claim_token``); ``attempt``: the change to the claim's attempt;
    ``delete``: remove the job and its whole history instead (a purge)."""

    job_id: str
    expect: Mapping[str, Any]
    fields: Mapping[str, Any] = field(default_factory=dict)
    attempt: AttemptChange | None = None
    delete: bool = False

    def applies_to(self, job: Job | None) -> bool:
        """Does ``job`` (as stored now) meet the expectation?"""
        return job is not None and all(getattr(job, k) == v for k, v in self.expect.items())

    def applied(self, job: Job) -> Job:
        """``job`` with the fields set (for stores that keep records)."""
        return job.replace(**self.fields) if self.fields else job
