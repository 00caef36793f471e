"""The storage seam: what every backend must do, and promise.

A backend plugin registers a :class:`~queuectl_core.registry.BackendSpec`
whose factory returns an object implementing :class:`Storage`. The worker
loop and the CLI talk to storage only through these methods.

Promises every backend keeps (the conformance kit checks them):

* **Atomic claim.** :meth:`Storage.claim` hands each claimable job to exactly
  one caller, across any number of processes (and, for shared databases,
  machines). Claim order: highest ``priority`` first, then earliest
  ``run_at``, then enqueue order; never a job whose ``run_at`` is in the
  future, nor one in a paused queue or outside the queues asked for. A claim
  increments ``attempts`` and opens an attempt record numbered one more than
  the job's attempt records so far, in the same transaction.
* **Cancellation wins.** Once :meth:`Storage.cancel` has asked for a running
  job to stop (``cancel_requested_at`` set), the attempt ends as
  ``cancelled`` and the job becomes ``cancelled`` whichever way it ends
  (:meth:`fail`, :meth:`recover_expired`), except that a command that
  succeeded first stays ``completed``.
* **Fencing.** Every change after a claim (:meth:`renew`, :meth:`complete`,
  :meth:`fail`, the first step of :meth:`finish_and_claim`) applies only if
  the job is still ``processing`` under the same claim token; otherwise it
  changes nothing and returns ``False`` / ``None``. A recovered job
  therefore cannot be completed twice.
* **One step.** Each method is one transaction: a crash leaves the old or
  the new state, never a mix. Moving a job to the dead letter queue and back
  are single steps.
* **All or nothing.** :meth:`enqueue` stores every job or none; a duplicate
  id (already stored or repeated in the batch) raises
  :class:`~queuectl_core.errors.DuplicateJobError` and changes nothing.
* **Transient failures.** A backend whose server is unreachable raises
  :class:`~queuectl_core.errors.TransientStorageError` from any method (and
  reconnects on a later call); workers retry those calls with backoff.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import TransientStorageError
from .models import Attempt, Claim, ExecResult, Job, JobState, NewJob, Outcome, WorkerInfo

#: The error recorded on a job cancelled before or while it ran.
CANCELLED_ERROR = "cancelled by request"

#: The error recorded on an attempt that :meth:`Storage.recover_expired`
#: takes back, charged (``lost``) or not (``interrupted``); ``{worker}`` is
#: the worker id. Every backend uses these, so that all stores tell the same
#: story in ``show``.
LOST_ATTEMPT_ERROR = ("worker {worker} went away before the attempt finished (killed, "
                      "crashed, or its lease expired)")
INTERRUPTED_ATTEMPT_ERROR = "stopped by force on worker {worker}; the attempt does not count"


class Storage(ABC):
    """Abstract storage backend. Instances are used from one thread; a
    process that needs storage in two threads opens two instances."""

    # ------------------------------------------------------------ jobs
    @abstractmethod
    def enqueue(self, jobs: Sequence[NewJob]) -> None:
        """Store new jobs in state ``pending``, all or nothing. The core
        validates every field first (``models.parse_job_spec``), so a backend
        may rely on the limits in ``models`` (no NUL in text, sizes)."""

    @abstractmethod
    def get(self, job_id: str) -> Job | None:
        """The job with that id, or None."""

    @abstractmethod
    def attempts(self, job_id: str) -> list[Attempt]:
        """Every attempt of the job, oldest first (also those made before a
        ``dlq retry`` reset the counter)."""

    @abstractmethod
    def list_jobs(self, state: JobState | None = None, limit: int | None = None, *,
                  queue: str | None = None) -> list[Job]:
        """Jobs in enqueue order, optionally only those in ``state`` and in
        ``queue``, at most ``limit`` of them."""

    @abstractmethod
    def counts(self, queue: str | None = None) -> dict[JobState, int]:
        """Number of jobs in each state (every state present, zeros
        included), optionally only those in ``queue``."""

    @abstractmethod
    def next_run_at(self, queues: Sequence[str] | None = None) -> int | None:
        """The earliest ``run_at`` among jobs that :meth:`claim` with the same
        ``queues`` could take once due (claimable state, queue not paused),
        or None if there are none. Lets an idle worker wake exactly when a
        delayed job is due."""

    # ------------------------------------------------------------ claims
    @abstractmethod
    def claim(self, worker_id: str, now: int, lease_ms: int,
              queues: Sequence[str] | None = None) -> Claim | None:
        """Atomically take the next due job (see the module docstring) from
        ``queues`` (None: any queue) that is not paused: state becomes
        ``processing``, ``attempts`` += 1, ``worker_id``, ``started_at =
        now`` and ``lease_expires_at = now + lease_ms`` are set, an attempt
        is opened; ``Claim.attempt`` is its number. Returns None when
        nothing is due."""

    @abstractmethod
    def renew(self, claim: Claim, now: int, lease_ms: int) -> bool:
        """Extend the lease (heartbeat). False if the claim is no longer ours."""

    @abstractmethod
    def complete(self, claim: Claim, result: ExecResult, now: int) -> Job | None:
        """Mark the job ``completed`` and close the attempt (outcome,
        ``finished_at``, exit code, signal, error and the output tails from
        ``result``). None if fenced out."""

    @abstractmethod
    def fail(self, claim: Claim, result: ExecResult, now: int, retry_at: int | None
             ) -> Job | None:
        """Close the attempt as failed. With ``retry_at`` the job becomes
        ``failed`` and runs again at ``retry_at``; with None it becomes
        ``dead``. ``last_error`` and ``exit_code`` record the result. If a
        cancel was requested (``cancel_requested_at`` set) the job becomes
        ``cancelled`` and the attempt's outcome is ``cancelled`` instead.
        None if fenced out."""

    def finish_and_claim(self, claim: Claim, result: ExecResult, now: int, *, completed: bool,
                         retry_at: int | None, worker_id: str, lease_ms: int,
                         queues: Sequence[str] | None = None
                         ) -> tuple[Job | None, Claim | None]:
        """Record a finished attempt and claim the next job, for a busy
        worker: ``complete(claim, result, now)`` if ``completed``, else
        ``fail(claim, result, now, retry_at)``; then
        ``claim(worker_id, now, lease_ms, queues)``, also when the first step
        was fenced out. Returns both results.

        Optional. This default makes the two calls; a backend may override
        it to do both in one transaction (the SQLite store does: one commit
        and one write lock per job instead of two). Either way each step
        keeps its own promises, and the claim may take the job just finished
        if it is due again. If the claim fails with TransientStorageError
        after the result was recorded, the result is returned with no claim
        (the worker then claims as usual), so that a retry never records the
        result twice. The worker calls this only when nothing has to happen
        between the two steps (no plugin listens for job events, no stop
        requested, no housekeeping due)."""
        if completed:
            done = self.complete(claim, result, now)
        else:
            done = self.fail(claim, result, now, retry_at)
        try:
            following = self.claim(worker_id, now, lease_ms, queues)
        except TransientStorageError:
            following = None
        return done, following

    def record_and_claim(self, outcomes: Sequence[Outcome], now: int, *, worker_id: str,
                         lease_ms: int, queues: Sequence[str] | None = None, limit: int = 1
                         ) -> tuple[list[Job | None], list[Claim]]:
        """Record several finished attempts, in order, then claim up to
        ``limit`` jobs: the batched form of :meth:`finish_and_claim`, for a
        busy worker that keeps a few results and claims at hand (see
        docs/semantics.md, "Claiming ahead"). Returns, for each outcome
        recorded, what :meth:`complete` or :meth:`fail` would return (None if
        fenced out), and the claims made, in claim order (fewer than
        ``limit`` when fewer jobs are due).

        Optional. This default records each outcome with its own call (the
        last together with the first claim, through :meth:`finish_and_claim`)
        and claims the rest one by one. A backend may override it to do it
        all in one transaction (the SQLite store does: one commit for a
        batch of jobs). If the store becomes unreachable part-way, the
        outcomes already recorded are returned (the list is then shorter than
        ``outcomes``, with no claims) and the caller records the rest again
        later; before any progress the TransientStorageError propagates. An
        override that is one transaction either records everything or raises."""
        dones: list[Job | None] = []
        claims: list[Claim] = []
        try:
            for i, outcome in enumerate(outcomes):
                at = outcome.at(now)
                if i == len(outcomes) - 1 and limit > 0 and at == now:
                    done, following = self.finish_and_claim(
                        outcome.claim, outcome.result, now, completed=outcome.completed,
                        retry_at=outcome.retry_at, worker_id=worker_id, lease_ms=lease_ms,
                        queues=queues)
                    dones.append(done)
                    if following is None:
                        return dones, claims
                    claims.append(following)
                elif outcome.completed:
                    dones.append(self.complete(outcome.claim, outcome.result, at))
                else:
                    dones.append(self.fail(outcome.claim, outcome.result, at,
                                           outcome.retry_at))
            while len(claims) < limit:
                following = self.claim(worker_id, now, lease_ms, queues)
                if following is None:
                    break
                claims.append(following)
        except TransientStorageError:
            if not dones and not claims:
                raise
        return dones, claims

    def due_count(self, now: int, queues: Sequence[str] | None = None, limit: int = 1
                  ) -> int | None:
        """How many jobs :meth:`claim` could take now (due, from ``queues``
        or any queue, not paused), counting at most ``limit``. A cheap read;
        it takes no lock and may be stale by the time it returns.

        Optional, together with :meth:`release`: a backend that implements
        both lets a busy worker claim its next job while the current one
        runs (see docs/semantics.md, "Claiming ahead"). This default returns
        None: the worker then never claims ahead."""
        return None

    def release(self, claim: Claim, now: int) -> Job | None:
        """Give back a claim whose command never started, as if it had not
        been made: the attempt record the claim opened is removed,
        ``attempts`` goes down by one, the job is ``pending`` (no counted
        attempt left) or ``failed`` (it keeps its ``run_at``, ``last_error``
        and ``exit_code``), and its ``worker_id``, ``started_at`` and
        ``finished_at`` are those of the attempt before (or None). A job
        whose cancel was requested meanwhile becomes ``cancelled`` instead
        (``finished_at = now``, ``last_error`` = CANCELLED_ERROR). One
        transaction, fenced like :meth:`complete`: None (and no change) if
        the claim is no longer ours; else the job as it is now.

        Optional: required only of a backend whose :meth:`due_count` returns
        a number."""
        raise NotImplementedError(f"{type(self).__name__} cannot release claims")

    @abstractmethod
    def recover_expired(self, now: int, worker_id: str | None = None, *,
                        charge_attempt: bool = True) -> list[Job]:
        """Take back jobs whose lease expired; or, with ``worker_id``, only the
        jobs that worker holds, expired or not (used when the worker is known
        to be dead or was stopped by force). Returns the jobs as they are now.

        With ``charge_attempt`` (crashes, lost leases) each open attempt is
        closed as ``lost`` and still counts: the job becomes ``dead`` if
        ``attempts > max_retries``, else ``failed`` with ``run_at = now`` so
        it runs again at once. Without it (an operator's forced stop) the
        attempt is closed as ``interrupted`` and given back: ``attempts`` goes
        down by one and the job is ``pending`` (if that leaves no counted
        attempt) or ``failed``, with ``run_at = now``; never ``dead``. Either
        way, a job whose cancel was requested becomes ``cancelled`` (its
        attempt ``cancelled``; ``last_error`` is the release's text as
        above)."""

    @abstractmethod
    def cancel(self, job_id: str, now: int) -> Job:
        """Cancel a job, in one step. ``pending`` or ``failed``: it becomes
        ``cancelled`` (``finished_at = cancel_requested_at = now``,
        ``last_error`` = CANCELLED_ERROR). ``processing``: ``cancel_requested_at = now`` is
        set and the job stays ``processing`` until its worker stops it (see
        :meth:`fail`); asking again changes nothing. Returns the job as
        stored. Raises JobNotFoundError, or InvalidStateError for a job that
        is ``completed``, ``dead`` or ``cancelled`` already."""

    @abstractmethod
    def purge(self, *, states: Sequence[JobState], finished_before: int | None = None,
              ids: Sequence[str] | None = None, limit: int | None = None) -> list[str]:
        """Delete jobs, with their attempt history, in one step: those in one
        of ``states`` (only ``completed``, ``dead`` and ``cancelled`` are
        allowed; ValueError otherwise), and, when given, with ``finished_at``
        (or ``updated_at`` if that is null) earlier than ``finished_before``,
        with an id in ``ids``, at most ``limit`` of them (oldest first; ties
        in enqueue order).
        Returns the ids deleted; a purged id may be enqueued again."""

    @abstractmethod
    def set_queue_paused(self, queue: str, paused: bool) -> bool:
        """Pause or resume claiming from ``queue`` (any name; it need not
        have jobs yet). Returns False if it was already in that state."""

    @abstractmethod
    def paused_queues(self) -> list[str]:
        """Names of the paused queues, sorted."""

    @abstractmethod
    def dlq_retry(self, job_id: str, now: int) -> Job:
        """Move a ``dead`` job back to ``pending`` with ``attempts = 0`` and
        ``run_at = now``, keeping its own ``max_retries`` and its attempt
        history (new attempts go on numbering after it). Raises
        JobNotFoundError or InvalidStateError."""

    @abstractmethod
    def import_jobs(self, records: Sequence[tuple[Job, Sequence[Attempt]]]) -> None:
        """Store jobs exported from another store, with their attempt history,
        all or nothing (``queuectl import``). Keep every field as given,
        including the state; ``run_at`` and the times are epoch ms. The core
        passes no ``processing`` job and no ``running`` attempt (it turns them
        into ``failed`` / ``lost`` first). A duplicate id (stored already or
        repeated in ``records``) raises DuplicateJobError and stores nothing.
        Enqueue order for claims is the order of ``records``."""

    # ------------------------------------------------------------ settings
    @abstractmethod
    def get_settings(self) -> dict[str, Any]:
        """The settings stored with ``set_setting`` (no defaults filled in)."""

    @abstractmethod
    def set_setting(self, key: str, value: Any) -> None:
        """Persist one validated setting value (JSON-serialisable)."""

    # ------------------------------------------------------------ workers
    @abstractmethod
    def register_worker(self, worker: WorkerInfo) -> None:
        """Record a worker (insert or replace)."""

    @abstractmethod
    def worker_heartbeat(self, worker_id: str, now: int, current_job: str | None,
                         job_pgid: int | None) -> None:
        """Refresh a worker's liveness and what it is running."""

    @abstractmethod
    def unregister_worker(self, worker_id: str) -> None:
        """Forget a worker (on clean exit)."""

    @abstractmethod
    def list_workers(self) -> list[WorkerInfo]:
        """Every registered worker, live or not."""

    @abstractmethod
    def prune_workers(self, heartbeat_before: int) -> int:
        """Forget workers whose last heartbeat is older than the given time."""

    # ------------------------------------------------------------ wake-ups
    def wakeup_fileno(self) -> int | None:
        """A file descriptor that becomes readable when work may have become
        due (a new job, a retry, a job back from the DLQ), for a backend that
        can push such news, e.g. PostgreSQL LISTEN/NOTIFY. An idle worker
        waits on it besides its poll timer. None (the default): no push."""
        return None

    def drain_wakeups(self) -> None:  # noqa: B027 - optional hook, default does nothing
        """Consume whatever made :meth:`wakeup_fileno` readable."""

    def local_paths(self) -> list[Path]:
        """Files and directories on this machine that hold the queue. Workers
        refuse to start if other users can write any of them. Default: none
        (a database server guards its own data)."""
        return []

    # ------------------------------------------------------------ lifecycle
    def describe(self) -> str:
        """A one-line description for humans (path, server); never a secret."""
        return type(self).__name__

    def close(self) -> None:  # noqa: B027 - optional hook, default does nothing
        """Release connections and files."""
