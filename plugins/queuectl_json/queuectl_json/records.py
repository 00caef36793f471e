"""Job, attempt and worker records as the JSON store keeps them: plain dicts
(the fields of :class:`~queuectl_core.models.Job` plus ``seq``, the enqueue
order, ``claim_token`` and ``history``, the attempts), their checks on
reading, the defaults a format-1 record means, and the conversions to and
from the core's records."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeGuard

from queuectl_core.limits import DEFAULT_QUEUE
from queuectl_core.models import Attempt, Job, JobState, WorkerInfo, record_from_dict

Record = dict[str, Any]

#: Active jobs live in the snapshot and the journal: the unfinished states
#: (``UNFINISHED_STATES``, which hold unique keys); finished ones in files.
ACTIVE_STATES = frozenset({"pending", "waiting", "processing", "failed"})
FINISHED_STATES = frozenset({"completed", "dead", "cancelled", "skipped"})
FINISHED_ORDER = ("completed", "dead", "cancelled", "skipped")
CLAIMABLE_STATES = frozenset({"pending", "failed"})
IMPORTABLE_STATES = (ACTIVE_STATES - {"processing"}) | FINISHED_STATES
#: Finished jobs that a change may make active again (``revive``): a dead
#: job retried from the DLQ, a skipped one whose parent was.
REVIVABLE_STATES = frozenset({"dead", "skipped"})
#: What formats 1 and 2 knew.
V1_FINISHED_STATES = frozenset({"completed", "dead"})
V2_FINISHED_STATES = frozenset({"completed", "dead", "cancelled"})

#: The job fields every record has (``claim_token`` is kept beside them:
#: active records have it, finished files leave it out).
JOB_FIELDS = tuple(name for name in Job.field_names() if name != "claim_token")
_INT_FIELDS = ("attempts", "max_retries", "priority", "run_at", "created_at", "updated_at",
               "waiting_on", "dependents")
_OPT_INT_FIELDS = ("started_at", "finished_at", "lease_expires_at", "exit_code",
                   "cancel_requested_at")
#: What a ``set`` operation may change.
SETTABLE = frozenset(JOB_FIELDS) - {"id"} | {"claim_token"}
ATTEMPT_KEYS = frozenset(Attempt.field_names()) - {"job_id"}
#: Fields that format 2 added, with the value a format 1 record means.
V2_JOB_FIELDS: dict[str, Any] = {"queue": DEFAULT_QUEUE, "timeout": None, "cwd": None,
                                 "env": None, "retry": None, "cancel_requested_at": None}
V2_ATTEMPT_FIELDS: dict[str, Any] = {"stdout_tail": None, "stderr_tail": None}
#: Fields that format 3 added (dependencies, concurrency and unique keys),
#: with the value an older record means: a record without them gets them.
V3_JOB_FIELDS: dict[str, Any] = {"after": None, "after_mode": None, "concurrency_key": None,
                                 "unique_key": None, "waiting_on": 0, "dependents": 0}
#: Fields added for recurring schedules, absent from older records (read as null).
SCHEDULE_JOB_FIELDS: dict[str, Any] = {"schedule": None, "scheduled_for": None}


class Damaged(Exception):
    """What is wrong with some stored data; the caller says where."""


def is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def upgrade_v1(rec: Any) -> Any:
    """A job record as format 1 wrote it, with the fields format 2 added
    (their defaults: what the record meant). Anything else is returned as
    it is, for the checks to reject."""
    if not isinstance(rec, dict):
        return rec
    new = {**V2_JOB_FIELDS, **V3_JOB_FIELDS, **rec}
    history = rec.get("history")
    if isinstance(history, list):
        new["history"] = [{**V2_ATTEMPT_FIELDS, **h} if isinstance(h, dict) else h
                          for h in history]
    return new


def _add_v3_fields(rec: Record) -> None:
    """Give a record written by format 1 or 2 the fields format 3 added, and
    an older record the schedule fields (read as null)."""
    for key, default in V3_JOB_FIELDS.items():
        if key not in rec:
            rec[key] = default
    for key, value in SCHEDULE_JOB_FIELDS.items():
        rec.setdefault(key, value)


def check_job(rec: Any, states: frozenset[str], *, after_checked: bool = False) -> Record:
    """A job record as stored (job fields + ``seq``, ``claim_token``,
    ``history``), or Damaged. ``claim_token`` is text only while the job is
    ``processing`` (and absent from finished jobs' files). ``after_checked``:
    its ``after`` is the list of a record checked before (a change that left
    it alone: a join of 10,000 jobs changes 10,000 times)."""
    if not isinstance(rec, dict):
        raise Damaged("a job record is not a JSON object")
    job_id = rec.get("id")
    if not isinstance(job_id, str):
        raise Damaged("a job record has no text 'id'")
    what = f"job {job_id!r}"
    _add_v3_fields(rec)
    missing = [k for k in (*JOB_FIELDS, "seq", "history") if k not in rec]
    if missing:
        raise Damaged(f"{what}: missing {', '.join(missing)}")
    if rec["state"] not in states:
        raise Damaged(f"{what}: state {rec['state']!r} does not belong here "
                      f"(expected one of {', '.join(sorted(states))})")
    for key in ("seq", *_INT_FIELDS):
        if not is_int(rec[key]):
            raise Damaged(f"{what}: {key} is not a whole number")
    for key in _OPT_INT_FIELDS:
        if rec[key] is not None and not is_int(rec[key]):
            raise Damaged(f"{what}: {key} is not a whole number or null")
    token = rec.get("claim_token")
    if token is not None and (not isinstance(token, str) or rec["state"] != "processing"):
        raise Damaged(f"{what}: claim_token does not match state {rec['state']!r}")
    values = {k: rec[k] for k in JOB_FIELDS}
    if after_checked:
        values["after"] = None
    try:
        record_from_dict(Job, values)
    except ValueError as exc:
        raise Damaged(f"{what}: {exc}") from None
    _check_history(what, job_id, rec["history"])
    if is_int(rec["timeout"]):  # written by hand: keep the type exact
        rec["timeout"] = float(rec["timeout"])
    return rec


def _check_history(what: str, job_id: str, history: Any) -> None:
    if not isinstance(history, list):
        raise Damaged(f"{what}: history is not a list")
    try:
        for entry in history:
            if not isinstance(entry, dict) or set(entry) != ATTEMPT_KEYS:
                raise Damaged(f"{what}: a history entry is not an attempt record")
            record_from_dict(Attempt, {**entry, "job_id": job_id})
    except ValueError as exc:
        raise Damaged(f"{what}: {exc}") from None


def check_worker(rec: Any) -> Record:
    if not isinstance(rec, dict):
        raise Damaged("a worker record is not a JSON object")
    if not (is_int(rec.get("heartbeat_at")) and is_int(rec.get("started_at"))):
        raise Damaged("a worker record lacks whole-number started_at/heartbeat_at")
    try:
        record_from_dict(WorkerInfo, rec)
    except ValueError as exc:
        raise Damaged(f"worker record: {exc}") from None
    return rec


def check_counts(value: Any, states: frozenset[str]) -> dict[str, int]:
    """Finished jobs counted by state (``states``: those the format knew),
    with every state of today (0 for those it did not know)."""
    if (not isinstance(value, dict) or set(value) != states
            or not all(is_int(n) for n in value.values())):
        raise Damaged(f"'finished' must count {', '.join(sorted(states))} jobs")
    return {state: value.get(state, 0) for state in FINISHED_ORDER}


def merged(rec: Record, fields: Any, attempt: Any) -> Record:
    """A new record: ``rec`` with ``fields`` set and one history entry
    appended (``index == len(history)``) or updated. Pure, so replaying a
    journal line twice gives the same result."""
    if not isinstance(fields, dict) or not set(fields) <= SETTABLE:
        raise Damaged("a 'set' operation changes unknown fields")
    new = dict(rec)
    new.update(fields)
    if attempt is not None:
        if not isinstance(attempt, dict):
            raise Damaged("an attempt change is not a JSON object")
        index, change = attempt.get("index"), attempt.get("set")
        history = list(rec["history"])
        if not is_int(index) or not isinstance(change, dict) or not 0 <= index <= len(history):
            raise Damaged("an attempt change names no existing attempt")
        if index == len(history):
            history.append(dict(change))
        else:
            history[index] = {**history[index], **change}
        new["history"] = history
    return new


def finish_key(rec: Record) -> int:
    """When a finished job finished (what purge ages and orders it by)."""
    finished = rec["finished_at"]
    return int(rec["updated_at"] if finished is None else finished)


def claim_key(rec: Record) -> tuple[int, int, int]:
    """Claim order: highest priority, earliest run_at, then enqueue order."""
    return (-rec["priority"], rec["run_at"], rec["seq"])


# ---------------------------------------------------------------- conversions

def to_job(rec: Record) -> Job:
    values: dict[str, Any] = {k: rec.get(k) for k in JOB_FIELDS}
    for key in ("env", "retry"):  # the caller gets its own copy
        if values[key] is not None:
            values[key] = dict(values[key])
    if values["after"] is not None:
        values["after"] = list(values["after"])
    return Job(**values, claim_token=rec.get("claim_token"))


def to_attempts(rec: Record) -> list[Attempt]:
    return [Attempt(**{**h, "job_id": rec["id"]}) for h in rec["history"]]


def to_worker(rec: Record) -> WorkerInfo:
    return WorkerInfo(**rec)


def stored_value(value: Any) -> Any:
    """A field value as a record holds it (JSON types; own copies)."""
    if isinstance(value, JobState):
        return value.value
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, list):
        return list(value)
    return value


def job_record(job: Job, seq: int, history: Sequence[Attempt]) -> Record:
    """The record of a job to insert (not yet checked)."""
    rec = {k: stored_value(getattr(job, k)) for k in JOB_FIELDS}
    if rec["timeout"] is not None:
        rec["timeout"] = float(rec["timeout"])
    rec.update(seq=seq, claim_token=job.claim_token, history=[attempt_record(a) for a in history])
    return rec


def attempt_record(attempt: Attempt) -> Record:
    return {k: v for k, v in attempt.as_dict().items() if k != "job_id"}
