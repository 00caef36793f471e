"""The job state machine: every change of a job and its attempts, decided
here, once, as pure functions.

Each function takes the job as read (and what happened) and returns a
:class:`~queuectl_core.models.Change`: the fields to set, what to do to the
claim's attempt, and what the job must still look like for the change to
apply (``expect``). A store makes the change atomically, or not at all when
the job changed meanwhile (compare-and-set); the caller then reads the job
again and decides again (:mod:`queuectl_core.ledger`). No store re-codes
these rules.

The rules, in one place:

* A claim counts an attempt (``attempts`` + 1) and opens an attempt record
  numbered after the job's whole history.
* A job may make ``max_retries + 1`` attempts: after a failure it is dead
  once ``attempts > max_retries`` (:func:`exhausted`), else it runs again at
  the retry time its backoff policy gives (``retry.next_run_at``).
* Cancellation wins: once a cancel was requested, a failure, a lost attempt
  or a claim given back ends the job ``cancelled``; a command that
  succeeded first stays ``completed``.
* A lost attempt (crash, expired lease) counts; an interrupted one (an
  operator's forced stop) and a claim given back unstarted do not.
* ``dlq retry`` puts a dead job back with ``attempts = 0``, keeping its
  ``max_retries`` and its history.
* What a change means for the jobs that run after the changed one is
  decided in :mod:`queuectl_core.dependencies`, and made with it.
"""

from __future__ import annotations

from .errors import InvalidStateError
from .models import (
    CLAIMABLE_STATES,
    FINISHED_STATES,
    Attempt,
    AttemptChange,
    Change,
    Job,
    JobState,
    Outcome,
)

# typing is not imported at run time (the CLI's hot path).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

#: The error recorded on a job cancelled before or while it ran.
CANCELLED_ERROR = "cancelled by request"
#: The error recorded on an attempt taken back from a worker, charged
#: (``lost``) or not (``interrupted``); ``{worker}`` is the worker id.
LOST_ATTEMPT_ERROR = ("worker {worker} went away before the attempt finished (killed, "
                      "crashed, or its lease expired)")
INTERRUPTED_ATTEMPT_ERROR = "stopped by force on worker {worker}; the attempt does not count"

#: The fields every decision reads: a change applies only if they are still
#: as read. Together they pin down the job's place in the state machine
#: (a claim, a release, a cancel or a retry each changes one of them).
#: ``dependents`` is there so that a job enqueued to run after this one
#: (which raises it) is never missed by a change decided before it came.
FENCE = ("state", "claim_token", "attempts", "cancel_requested_at", "dependents")


def fence(job: Job, *extra: str) -> dict[str, Any]:
    """What ``job`` must still look like for a change decided from it."""
    return {key: getattr(job, key) for key in (*FENCE, *extra)}


def held_fence(job: Job, token: str) -> dict[str, Any]:
    """The fence of a change made for the claim with ``token``: the job as
    read, and held by that claim (whatever the snapshot's own token)."""
    return {**fence(job), "state": JobState.PROCESSING, "claim_token": token}


def exhausted(attempts: int, max_retries: int) -> bool:
    """After a failed or lost attempt: is the job dead? (The one rule.)"""
    return attempts > max_retries


def holds(job: Job | None, token: str) -> bool:
    """Is ``job`` still held by the claim with ``token``?"""
    return (job is not None and job.state is JobState.PROCESSING
            and job.claim_token == token)


# ------------------------------------------------------------------ claims

def claimed(job: Job, *, worker_id: str, token: str, now: int, lease_ms: int,
            number: int) -> Change:
    """A claim of a due ``job`` by ``worker_id``, opening attempt ``number``
    (one more than the job's attempt records). SQL stores make the same
    change in their claim statement; stores that claim by compare-and-set
    use this one (``Storage.claim``'s default)."""
    lease = now + lease_ms
    # updated_at too: a claim and a forced stop in between leave the fence's
    # fields as read, but not the history that ``number`` counted.
    return Change(
        job.id, fence(job, "updated_at"),
        fields={"state": JobState.PROCESSING, "attempts": job.attempts + 1,
                "worker_id": worker_id, "claim_token": token, "lease_expires_at": lease,
                "started_at": now, "finished_at": None, "updated_at": now},
        attempt=AttemptChange(token, open=Attempt(job_id=job.id, number=number,
                                                  worker_id=worker_id, started_at=now)))


def renewed(job: Job, token: str, *, now: int, lease_ms: int) -> Change:
    """The holder of the claim with ``token`` extends its lease."""
    return Change(job.id, held_fence(job, token), fields={"lease_expires_at": now + lease_ms})


def finished(job: Job, outcome: Outcome, now: int) -> Change:
    """Record a finished attempt of ``job`` (held by ``outcome.claim``):
    completed on success; otherwise cancelled if a cancel was requested,
    else failed (again at ``outcome.retry_at``) or dead (no retry time)."""
    result, token = outcome.result, outcome.claim.token
    at = outcome.at(now)
    if outcome.completed:
        state, attempt_outcome = JobState.COMPLETED, "completed"
    elif job.cancel_requested_at is not None:
        state, attempt_outcome = JobState.CANCELLED, "cancelled"
    else:
        state = JobState.FAILED if outcome.retry_at is not None else JobState.DEAD
        attempt_outcome = "failed"
    fields: dict[str, Any] = {
        "state": state, "last_error": None if outcome.completed else result.error,
        "exit_code": result.exit_code, "finished_at": at, "updated_at": at,
        "lease_expires_at": None, "claim_token": None}
    if state is JobState.FAILED:
        fields["run_at"] = outcome.retry_at
    attempt: dict[str, Any] = {
        "finished_at": at, "outcome": attempt_outcome, "exit_code": result.exit_code,
        "signal": result.signal, "error": result.error, "stdout_tail": result.stdout_tail,
        "stderr_tail": result.stderr_tail}
    if outcome.started_at is not None:
        fields["started_at"] = attempt["started_at"] = outcome.started_at
    return Change(job.id, held_fence(job, token), fields=fields,
                  attempt=AttemptChange(token, fields=attempt))


def taken_back(job: Job, *, now: int, charge: bool, error: str | None = None) -> Change:
    """Take a processing job back from its worker: the worker died or its
    lease expired (``charge``: the attempt counts, ``lost``; the job is dead
    if that was its last), or an operator stopped it by force (the attempt
    is ``interrupted`` and given back). Either way it runs again at once,
    unless a cancel was requested (then it is cancelled). ``error``: the
    text to record instead of the usual one. Decided on the lease as read,
    so the change expects that lease too (a renewal meanwhile wins)."""
    assert job.state is JobState.PROCESSING and job.claim_token is not None
    attempts = job.attempts
    if charge:
        outcome = "lost"
        text = LOST_ATTEMPT_ERROR.format(worker=job.worker_id)
        state = JobState.DEAD if exhausted(attempts, job.max_retries) else JobState.FAILED
    else:
        outcome = "interrupted"
        text = INTERRUPTED_ATTEMPT_ERROR.format(worker=job.worker_id)
        attempts -= 1
        state = JobState.PENDING if attempts == 0 else JobState.FAILED
    if job.cancel_requested_at is not None:
        state, outcome = JobState.CANCELLED, "cancelled"
    text = error if error is not None else text
    return Change(
        job.id, fence(job, "lease_expires_at"),
        fields={"state": state, "attempts": attempts, "run_at": now, "last_error": text,
                "exit_code": None, "finished_at": now, "updated_at": now,
                "lease_expires_at": None, "claim_token": None},
        attempt=AttemptChange(job.claim_token,
                              fields={"finished_at": now, "outcome": outcome, "error": text}))


def released(job: Job, before: Attempt | None, *, now: int) -> Change:
    """Give back a claim whose command never started, as if it had not been
    made: its attempt record goes, ``attempts`` goes down by one, and the
    job is as before the claim (``before``: its previous attempt, if any),
    except that a cancel requested meanwhile cancels it."""
    assert job.state is JobState.PROCESSING and job.claim_token is not None
    attempts = job.attempts - 1
    fields: dict[str, Any] = {
        "state": JobState.PENDING if attempts == 0 else JobState.FAILED,
        "attempts": attempts, "updated_at": now, "lease_expires_at": None,
        "claim_token": None,
        "worker_id": before.worker_id if before is not None else None,
        "started_at": before.started_at if before is not None and attempts else None,
        "finished_at": before.finished_at if before is not None and attempts else None}
    if job.cancel_requested_at is not None:
        fields.update(state=JobState.CANCELLED, finished_at=now, last_error=CANCELLED_ERROR)
    return Change(job.id, fence(job), fields=fields,
                  attempt=AttemptChange(job.claim_token, drop=True))


# ------------------------------------------------------------------ operators

def cancelled(job: Job, *, now: int) -> Change | None:
    """``queuectl cancel``: a waiting job is cancelled at once; a running one
    is asked to stop (its worker then records it, see :func:`finished`);
    asking again changes nothing (None). Raises InvalidStateError for a
    finished job."""
    if job.state in FINISHED_STATES:
        raise InvalidStateError(f"job {job.id!r} is {job.state.value} already")
    if job.state is JobState.PROCESSING:
        if job.cancel_requested_at is not None:
            return None
        return Change(job.id, fence(job), fields={"cancel_requested_at": now, "updated_at": now})
    assert job.state in CLAIMABLE_STATES or job.state is JobState.WAITING
    return Change(job.id, fence(job), fields={
        "state": JobState.CANCELLED, "finished_at": now, "updated_at": now,
        "last_error": CANCELLED_ERROR, "cancel_requested_at": now})


def revived(job: Job, *, now: int) -> Change:
    """``dlq retry``: a dead job runs again, with ``attempts = 0``, keeping
    its own ``max_retries`` and its history (new attempts number on).
    Raises InvalidStateError for a job that is not dead."""
    if job.state is not JobState.DEAD:
        raise InvalidStateError(
            f"job {job.id!r} is {job.state.value}, not dead; only jobs in the DLQ can be "
            "retried")
    return Change(job.id, fence(job), fields={
        "state": JobState.PENDING, "attempts": 0, "run_at": now, "updated_at": now,
        "started_at": None, "finished_at": None, "exit_code": None})


def purged(job: Job) -> Change:
    """Delete a finished job with its history."""
    if job.state not in FINISHED_STATES:
        raise InvalidStateError(f"job {job.id!r} is {job.state.value}; only completed, dead "
                                "and cancelled jobs can be purged")
    return Change(job.id, fence(job), delete=True)


def finished_at(job: Job) -> int:
    """When a finished job finished, for ``purge`` and retention (imported
    jobs may lack ``finished_at``)."""
    return job.finished_at if job.finished_at is not None else job.updated_at


def arrived(job: Job, history: list[Attempt], *, now: int, error: str
            ) -> tuple[Job, list[Attempt]]:
    """A job brought in by ``import`` as it was exported. One that was
    running has no worker here: its attempt was lost in the move, as after
    a crash (``error`` says so), so it runs again, or is dead or cancelled
    by the same rules as :func:`taken_back`. (No attempt is left running.)"""
    lost: dict[str, Any] = {"finished_at": now, "outcome": "lost", "error": error}
    if job.state is JobState.PROCESSING:
        token = job.claim_token or "import"
        change = taken_back(job.replace(claim_token=token), now=now, charge=True, error=error)
        assert change.attempt is not None
        lost = dict(change.attempt.fields)
        job = change.applied(job)
    return job, [a.replace(**lost) if a.outcome == "running" else a for a in history]
