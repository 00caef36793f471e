"""The storage seam: what a backend stores, and promises.

The core decides every change of a job (:mod:`queuectl_core.transitions`);
a backend only stores jobs, claims due ones, and makes the core's changes
atomically and fenced. A backend implements the abstract methods of
:class:`Storage` (thirteen, three of them about workers); the rest have
defaults built on those, which a backend may override to be faster.

Promises every backend keeps (``queuectl_core.testing.StorageConformance``
checks them):

* **Compare-and-set.** :meth:`Storage.apply` makes each change only if every
  field in its ``expect`` still has that value, as one step with the
  others of the call: a crash leaves all of them or none. A change whose
  expectation fails changes nothing and gives None.
* **Atomic claim.** A job is claimed by exactly one caller, across any
  number of processes (and, for shared databases, machines). Claim order:
  highest ``priority`` first, then earliest ``run_at``, then enqueue
  order; never a job whose ``run_at`` is in the future, nor one in a paused
  queue or outside the queues asked for.
* **All or nothing.** :meth:`Storage.insert` stores every job or none; a
  duplicate id (stored already, or twice in the batch) raises
  :class:`~queuectl_core.errors.DuplicateJobError` and changes nothing.
  With ``atomic=True``, :meth:`Storage.apply` makes every change or none.
* **Unique keys.** No two jobs in an unfinished state (``UNFINISHED_STATES``)
  share a ``unique_key``: an insert or change that would make two raises
  :class:`~queuectl_core.errors.UniqueKeyError` and changes nothing.
* **Concurrency limits.** A claim never takes a job whose
  ``concurrency_key`` already has as many ``processing`` jobs as its limit
  (:func:`concurrency_limit`), across every claimer; it takes the next job
  instead (no head-of-line blocking).
* **Transient failures.** A backend whose server is unreachable raises
  :class:`~queuectl_core.errors.TransientStorageError` from any method (and
  reconnects on a later call); nothing was changed by that call, or all of
  it was. Workers retry.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence

from .errors import TransientStorageError
from .models import (
    CLAIMABLE_STATES,
    Attempt,
    Change,
    Claim,
    FinishedAttempt,
    Job,
    JobState,
    WorkerInfo,
)
from .schedule_seam import ScheduleStorage
from .transitions import claimed, finished_at

# typing is not imported at run time (the CLI's hot path).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

#: The setting that holds the concurrency limits (an object of key: N).
LIMITS_SETTING = "concurrency_limits"
#: The limit of a concurrency key with none set: a mutex.
DEFAULT_CONCURRENCY_LIMIT = 1


def concurrency_limit(limits: dict[str, Any] | None, key: str) -> int:
    """How many jobs with ``key`` may run at once, by the stored limits."""
    value = (limits or {}).get(key)
    return value if type(value) is int else DEFAULT_CONCURRENCY_LIMIT


#: How often the default :meth:`Storage.claim` tries again when other
#: claimers took its candidates first.
CLAIM_ROUNDS = 100


def new_token() -> str:
    """A claim token: unique per claim (128 random bits)."""
    return os.urandom(16).hex()


def claim_order(job: Job) -> tuple[int, int]:
    """Sort key of claim order among due jobs (after it, enqueue order)."""
    return (-job.priority, job.run_at)


class Storage(ScheduleStorage, ABC):
    """A storage backend. Instances are used from one thread; a process that
    needs storage in two threads opens two instances. The optional schedule
    methods come from :class:`~queuectl_core.schedule_seam.ScheduleStorage`."""

    # ------------------------------------------------------------ required
    @abstractmethod
    def insert(self, records: Sequence[tuple[Job, Sequence[Attempt]]],
               changes: Sequence[Change] = ()) -> None:
        """Store new jobs, each with its attempt history (empty for a job
        just enqueued; ``import`` brings history), all or nothing, in the
        order given (enqueue order, for claims), and make ``changes`` (the
        parents' ``dependents``) in the same step. The core has validated
        every field; no job is ``processing``. Raises DuplicateJobError,
        UniqueKeyError, or ChangedMeanwhile if a change does not apply;
        then nothing was stored."""

    @abstractmethod
    def get(self, job_id: str) -> Job | None:
        """The job with that id, or None."""

    @abstractmethod
    def attempts(self, job_id: str) -> list[Attempt]:
        """Every attempt of the job, oldest first."""

    @abstractmethod
    def list_jobs(self, state: JobState | None = None, limit: int | None = None, *,
                  queue: str | None = None) -> list[Job]:
        """Jobs in enqueue order, optionally only those in ``state`` and in
        ``queue``, at most ``limit`` of them."""

    @abstractmethod
    def due(self, now: int, queues: Sequence[str] | None = None, limit: int = 1) -> list[Job]:
        """Up to ``limit`` jobs a claim could take now, in claim order: in a
        claimable state (``pending``, ``failed``), ``run_at <= now``, in one
        of ``queues`` (None: any) and not in a paused queue. A read: it
        takes nothing."""

    @abstractmethod
    def apply(self, changes: Sequence[Change], *, atomic: bool = False
              ) -> list[Job | None]:
        """Make the changes, in order, in one step; each only if the job
        still meets its ``expect`` (see :class:`~queuectl_core.models.Change`)
        as left by the changes before it; with ``atomic``, all of them or
        none (then every result is None). Returns, for each, the job as
        stored after it (for a deletion: as it was), or None if it was not
        made. The attempt a change names by
        its claim token is the job's latest while the job holds that token
        (the expectation says so); a name that is not a field of Job or
        Attempt is a programming error (ValueError), never SQL."""

    @abstractmethod
    def get_settings(self) -> dict[str, Any]:
        """The settings stored with ``set_setting`` (no defaults filled in)."""

    @abstractmethod
    def set_setting(self, key: str, value: Any) -> None:
        """Persist one validated setting value (JSON-serialisable)."""

    @abstractmethod
    def set_queue_paused(self, queue: str, paused: bool) -> bool:
        """Pause or resume claiming from ``queue`` (any name). False if it
        was in that state already."""

    @abstractmethod
    def paused_queues(self) -> list[str]:
        """Names of the paused queues, sorted."""

    @abstractmethod
    def put_worker(self, worker: WorkerInfo) -> None:
        """Record a worker, or replace its record (registration, heartbeat)."""

    @abstractmethod
    def remove_workers(self, worker_ids: Sequence[str]) -> None:
        """Forget workers (ids not stored are ignored)."""

    @abstractmethod
    def list_workers(self) -> list[WorkerInfo]:
        """Every registered worker, in order of start."""

    # ------------------------------------------------------------ derived
    def claim(self, worker_id: str, now: int, lease_ms: int,
              queues: Sequence[str] | None = None, limit: int = 1) -> list[Claim]:
        """Claim up to ``limit`` due jobs for ``worker_id``, in claim order:
        each becomes ``processing`` with a new claim token and a lease, and
        gets a new attempt record (see ``transitions.claimed``).

        This default reads :meth:`due` candidates and takes each by
        compare-and-set (:meth:`apply`), trying again when another claimer
        was first. SQL backends override it with one statement
        (``SKIP LOCKED``, ``BEGIN IMMEDIATE``)."""
        claims: list[Claim] = []
        for _ in range(CLAIM_ROUNDS):
            if len(claims) >= limit:
                break
            candidates = self.due(now, queues, limit - len(claims))
            if not candidates:
                break
            changes = [claimed(job, worker_id=worker_id, token=new_token(), now=now,
                               lease_ms=lease_ms, number=len(self.attempts(job.id)) + 1)
                       for job in candidates]
            for change, job in zip(changes, self.apply(changes), strict=True):
                if job is not None:
                    assert change.attempt is not None and change.attempt.open is not None
                    claims.append(Claim(job=job, token=change.attempt.token,
                                        worker_id=worker_id, attempt=change.attempt.open.number,
                                        lease_expires_at=now + lease_ms))
        return claims

    def apply_and_claim(self, changes: Sequence[Change], *, worker_id: str, now: int,
                        lease_ms: int, queues: Sequence[str] | None = None, limit: int = 0,
                        atomic: bool = False) -> tuple[list[Job | None], list[Claim]]:
        """:meth:`apply`, then :meth:`claim` of up to ``limit`` jobs: what a
        busy worker does after its commands end. A backend may do both in
        one transaction (SQLite, PostgreSQL: one commit per batch); the
        claim sees what the changes did (a job they made ``pending``). With
        ``atomic``, the changes are all or nothing, as with ``apply``, and
        when they are not made no job is claimed either. If the claim meets
        an outage after the changes were made, this default returns them
        with no claims (the worker claims again later)."""
        done = self.apply(changes, atomic=atomic) if changes else []
        if limit <= 0 or (None in done and atomic):
            return done, []
        try:
            return done, self.claim(worker_id, now, lease_ms, queues, limit)
        except TransientStorageError:
            if not changes:
                raise
            return done, []

    def dependents(self, job_id: str) -> list[Job]:
        """The jobs that name ``job_id`` in their ``after``, in enqueue
        order. Default: reads every job (SQL stores keep an index)."""
        return [job for job in self.list_jobs() if job.after and job_id in job.after]

    def insert_new(self, jobs: Iterable[Job]) -> int:
        """Store new ``pending`` jobs (no history), read once from ``jobs``
        in the order given, all or nothing, as :meth:`insert` does; how many.
        ``jobs`` may be a stream too big to hold (``enqueue --file`` of a
        million lines); an exception it raises stores nothing. Default:
        collects them and calls :meth:`insert`; stores override it to keep
        only a batch in memory, in one transaction."""
        records = [(job, ()) for job in jobs]
        self.insert(records)
        return len(records)

    def counts(self, queue: str | None = None) -> dict[JobState, int]:
        """Number of jobs in each state (every state, zeros included),
        optionally only in ``queue``. Default: counts :meth:`list_jobs`."""
        counts = dict.fromkeys(JobState, 0)
        for job in self.list_jobs(queue=queue):
            counts[job.state] += 1
        return counts

    def list_newest(self, state: JobState | None = None, limit: int | None = None, *,
                    queue: str | None = None) -> list[Job]:
        """Like :meth:`list_jobs`, newest first (reverse enqueue order): the
        latest ``limit`` jobs, what ``list`` shows by default. Default:
        reads :meth:`list_jobs`; stores override it with an indexed read
        whose cost does not grow with the number of jobs."""
        jobs = self.list_jobs(state, queue=queue)
        jobs.reverse()
        return jobs if limit is None else jobs[:limit]

    def next_run_at(self, queues: Sequence[str] | None = None) -> int | None:
        """The earliest ``run_at`` among jobs a claim from ``queues`` could
        take once due, or None: when an idle worker should look again.
        Default: reads the claimable jobs."""
        paused = set(self.paused_queues())
        full = self.full_keys()
        times = [job.run_at for state in CLAIMABLE_STATES for job in self.list_jobs(state)
                 if job.queue not in paused and (queues is None or job.queue in queues)
                 and job.concurrency_key not in full]
        return min(times, default=None)

    def full_keys(self) -> set[str]:
        """The concurrency keys with as many ``processing`` jobs as their
        limit (a read; helps defaults and simple stores skip held-back jobs)."""
        limits = self.get_settings().get(LIMITS_SETTING)
        running: dict[str, int] = {}
        for job in self.list_jobs(JobState.PROCESSING):
            if job.concurrency_key is not None:
                running[job.concurrency_key] = running.get(job.concurrency_key, 0) + 1
        return {key for key, n in running.items() if n >= concurrency_limit(limits, key)}

    def due_count(self, now: int, queues: Sequence[str] | None = None, limit: int = 1) -> int:
        """How many jobs a claim could take now, counting at most ``limit``
        (a cheap read; it may be stale when it returns). Default: :meth:`due`."""
        return len(self.due(now, queues, limit))

    def expired(self, now: int) -> list[Job]:
        """Processing jobs whose lease ended before ``now``, in enqueue
        order. Default: reads the processing jobs."""
        return [job for job in self.list_jobs(JobState.PROCESSING)
                if job.lease_expires_at is not None and job.lease_expires_at < now]

    def finished(self, states: Sequence[JobState], before: int | None = None,
                 limit: int | None = None) -> list[Job]:
        """Finished jobs in ``states``, oldest first (by ``finished_at``, or
        ``updated_at`` when that is null; ties in enqueue order), only those
        finished before ``before`` if given, at most ``limit``: what
        ``purge`` and retention delete. Default: reads those states."""
        wanted = set(states)
        found = [job for job in self.list_jobs() if job.state in wanted
                 and (before is None or finished_at(job) < before)]
        found.sort(key=finished_at)  # stable: ties stay in enqueue order
        return found if limit is None else found[:limit]

    # ------------------------------------------------------------ views
    # What ``stats``, the dashboard and the metrics read. Defaults read every
    # job; the SQL stores answer from indexes and maintained counts.
    def queue_counts(self) -> dict[str, dict[JobState, int]]:
        """Number of jobs in each state (zeros included) of every queue that
        has jobs. Default: counts :meth:`list_jobs`."""
        found: dict[str, dict[JobState, int]] = {}
        for job in self.list_jobs():
            found.setdefault(job.queue, dict.fromkeys(JobState, 0))[job.state] += 1
        return found

    def oldest_due(self, now: int) -> dict[str, int]:
        """Per queue (paused ones too), the earliest ``run_at`` of a
        claimable job that is due at ``now``; queues with none are left out.
        Default: reads the claimable jobs."""
        found: dict[str, int] = {}
        for state in CLAIMABLE_STATES:
            for job in self.list_jobs(state):
                if job.run_at <= now and job.run_at < found.get(job.queue, now + 1):
                    found[job.queue] = job.run_at
        return found

    def finished_attempts(self, since: int, queue: str | None = None,
                          limit: int = 10_000) -> list[FinishedAttempt]:
        """Attempts that finished at or after ``since`` (of ``queue`` if
        given), newest first, at most ``limit``; ``due_at`` is the job's
        ``run_at`` for a completed attempt (its due time), else None.
        Default: reads every job's attempts."""
        found = [FinishedAttempt(job_id=job.id, queue=job.queue, command=job.command,
                                 outcome=a.outcome, started_at=a.started_at,
                                 finished_at=a.finished_at, exit_code=a.exit_code,
                                 due_at=job.run_at if a.outcome == "completed" else None)
                 for job in self.list_jobs(queue=queue) for a in self.attempts(job.id)
                 if a.finished_at is not None and a.finished_at >= since]
        found.sort(key=lambda f: f.finished_at, reverse=True)
        return found[:limit]

    def outcome_counts(self, since: int, queue: str | None = None
                       ) -> dict[str, dict[str, int]]:
        """Per queue: how many attempts finished at or after ``since`` with
        each outcome (only outcomes seen), and under ``"dead"`` how many
        jobs now dead died then. Default: reads every job and attempt."""
        found: dict[str, dict[str, int]] = {}
        for job in self.list_jobs(queue=queue):
            per = found.setdefault(job.queue, {})
            for a in self.attempts(job.id):
                if a.finished_at is not None and a.finished_at >= since:
                    per[a.outcome] = per.get(a.outcome, 0) + 1
            if job.state is JobState.DEAD and finished_at(job) >= since:
                per["dead"] = per.get("dead", 0) + 1
        return {name: per for name, per in found.items() if per}

    def browse_jobs(self, *, state: JobState | None = None, queue: str | None = None,
                    text: str | None = None, before: str | None = None,
                    limit: int = 50) -> list[Job]:
        """A page of jobs, newest first: those enqueued before the job
        ``before`` (an id; None: from the newest), in ``state`` and
        ``queue`` if given, whose id or command contains ``text``, at most
        ``limit``. Default: reads :meth:`list_jobs`."""
        jobs = self.list_jobs()
        if before is not None:
            ids = [job.id for job in jobs]
            jobs = jobs[:ids.index(before)] if before in ids else []
        jobs = [job for job in reversed(jobs)
                if (state is None or job.state is state) and (queue is None or job.queue == queue)
                and (not text or text in job.id or text in job.command)]
        return jobs[:limit]

    # ------------------------------------------------------------ optional
    def wakeup_fileno(self) -> int | None:
        """A file descriptor that becomes readable when work may have become
        due, for a backend that can push such news (PostgreSQL
        LISTEN/NOTIFY). An idle worker waits on it besides its timer.
        None (the default): no push."""
        return None

    def drain_wakeups(self) -> None:
        """Consume whatever made :meth:`wakeup_fileno` readable."""

    def local_paths(self) -> list[Path]:
        """Files and directories on this machine that hold the queue. Workers
        refuse to start if other users can write any of them. Default: none
        (a database server guards its own data)."""
        return []

    def bound_calls(self, seconds: float) -> None:
        """Give up on any one exchange with a server that stays silent this
        long (raise TransientStorageError and reconnect on the next call).
        A worker sets a part of its lease, so that a stalled connection is
        noticed while the lease still holds. Default: nothing (a store on
        local files has no connection to stall)."""

    def describe(self) -> str:
        """A one-line description for humans (path, server); never a secret."""
        return type(self).__name__

    def close(self) -> None:
        """Release connections and files."""
