"""The queue's operations over a store: each reads what it needs, lets
:mod:`~queuectl_core.transitions` decide, and has the store make the change,
fenced. The worker and the CLI change jobs only through a :class:`Ledger`.

When a change does not apply (another process changed the job between the
read and the write: a cancel, a renewal, a recovery), the ledger reads the
job again and decides again, as long as the decision still stands (the
claim is still held, the job still exists).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

from . import dependencies as graph
from . import transitions as rules
from .errors import (
    ChangedMeanwhile,
    JobNotFoundError,
    NeedsWholeBatch,
    StorageError,
    UsageError,
)
from .models import (
    FINISHED_STATES,
    Attempt,
    Change,
    Claim,
    ExecResult,
    Job,
    JobState,
    Outcome,
    WorkerInfo,
)
from .storage import Storage
from .timeutil import now_ms

# typing is not imported at run time (the CLI's hot path).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

#: How often one decision is made again when the job keeps changing under it.
MAX_ROUNDS = 50


def _deciding_finish(outcome: Outcome, now: int) -> Callable[[Job], Change]:
    return lambda job: rules.finished(job, outcome, now)


class Ledger:
    """Every change of a job, decided by the core and stored by ``store``."""

    def __init__(self, store: Storage) -> None:
        self.store = store
        #: Called after a store call that made jobs ``pending`` by releasing
        #: them (their parents finished): a worker pokes the idle workers of
        #: its machine, as ``enqueue`` does.
        self.on_release: Callable[[], None] | None = None

    # ---------------------------------------------------------- reading
    def get(self, job_id: str) -> Job | None:
        return self.store.get(job_id)

    def attempts(self, job_id: str) -> list[Attempt]:
        return self.store.attempts(job_id)

    def list_jobs(self, state: JobState | None = None, limit: int | None = None, *,
                  queue: str | None = None) -> list[Job]:
        return self.store.list_jobs(state, limit, queue=queue)

    def list_newest(self, state: JobState | None = None, limit: int | None = None, *,
                    queue: str | None = None) -> list[Job]:
        return self.store.list_newest(state, limit, queue=queue)

    def counts(self, queue: str | None = None) -> dict[JobState, int]:
        return self.store.counts(queue)

    def dependents(self, job_id: str) -> list[Job]:
        """The jobs that run after ``job_id``."""
        return self.store.dependents(job_id)

    def relatives(self, job: Job) -> dict[str, list[dict[str, str]]]:
        """``parents`` (the jobs ``job`` runs after; one no longer stored
        is ``purged``) and ``children`` (those that run after it), each
        ``{"id", "state"}``: what ``show --json`` and the dashboard give."""
        parents = [(p, self.store.get(p)) for p in job.after or ()]
        children = self.store.dependents(job.id) if job.dependents else []
        return {"parents": [{"id": p, "state": j.state.value if j else "purged"}
                            for p, j in parents],
                "children": [{"id": c.id, "state": c.state.value} for c in children]}

    def next_run_at(self, queues: Sequence[str] | None = None) -> int | None:
        return self.store.next_run_at(queues)

    def due_count(self, now: int, queues: Sequence[str] | None = None, limit: int = 1) -> int:
        return self.store.due_count(now, queues, limit)

    def expired(self, now: int) -> list[Job]:
        """Processing jobs whose lease ended before ``now``."""
        return self.store.expired(now)

    def paused_queues(self) -> list[str]:
        return self.store.paused_queues()

    def set_queue_paused(self, queue: str, paused: bool) -> bool:
        return self.store.set_queue_paused(queue, paused)

    def get_settings(self) -> dict[str, Any]:
        return self.store.get_settings()

    def set_setting(self, key: str, value: Any) -> None:
        self.store.set_setting(key, value)

    # ---------------------------------------------------------- workers
    def register_worker(self, worker: WorkerInfo) -> None:
        self.store.put_worker(worker)

    def worker_heartbeat(self, worker_id: str, now: int, current_job: str | None,
                         job_pgid: int | None) -> None:
        """Refresh a registered worker's liveness and what it runs (a worker
        no longer registered stays forgotten)."""
        for worker in self.store.list_workers():
            if worker.id == worker_id:
                self.store.put_worker(worker.replace(heartbeat_at=now, current_job=current_job,
                                                     job_pgid=job_pgid))
                return

    def unregister_worker(self, worker_id: str) -> None:
        self.store.remove_workers([worker_id])

    def list_workers(self) -> list[WorkerInfo]:
        return self.store.list_workers()

    def prune_workers(self, heartbeat_before: int) -> int:
        """Forget workers whose last heartbeat is older than that."""
        stale = [w.id for w in self.store.list_workers() if w.heartbeat_at < heartbeat_before]
        if stale:
            self.store.remove_workers(stale)
        return len(stale)

    # ---------------------------------------------------------- new jobs
    def enqueue(self, jobs: Sequence[Job]) -> list[Job]:
        """Store new (pending) jobs, all or nothing; those with ``after``
        are placed by ``dependencies.placed`` (waiting, pending or skipped),
        guarded against their parents changing meanwhile. Returns the jobs
        as stored."""
        keys: dict[str, str] = {}
        for job in jobs:
            if job.unique_key is not None:
                if job.unique_key in keys:
                    raise UsageError(f"jobs {keys[job.unique_key]!r} and {job.id!r} share the "
                                     f"unique key {job.unique_key!r} (nothing was stored)")
                keys[job.unique_key] = job.id
        if not any(job.after for job in jobs):
            self.store.insert([(job, ()) for job in jobs])
            return list(jobs)
        for _ in range(MAX_ROUNDS):
            ready, guards = graph.placed(self.store, jobs, now_ms())
            try:
                self.store.insert([(job, ()) for job in ready], guards)
            except ChangedMeanwhile:
                continue
            return ready
        raise StorageError("the jobs to run after kept changing; try again")

    def enqueue_stream(self, jobs: Iterable[Job]) -> int:
        """Store new (pending) jobs read once from a stream, all or nothing:
        how many. A job with ``after``, ``unique_key`` or ``concurrency_key``
        raises NeedsWholeBatch (nothing stored): such jobs are placed as one
        batch by :meth:`enqueue`."""
        def plain() -> Iterator[Job]:
            for job in jobs:
                if job.after or job.unique_key is not None or job.concurrency_key is not None:
                    raise NeedsWholeBatch(f"job {job.id!r} must be placed with its batch")
                yield job

        return self.store.insert_new(plain())

    def import_jobs(self, records: Sequence[tuple[Job, Sequence[Attempt]]]) -> None:
        """Store exported jobs with their history, all or nothing; a job
        that was running is first settled as ``transitions.arrived`` says
        (lost in the move), so that none is stored ``processing``, and the
        dependencies are counted again (``dependencies.placed``)."""
        now = now_ms()
        settled = [rules.arrived(job, list(history), now=now,
                           error="exported while running; the attempt was lost in the move")
                   for job, history in records]
        if not any(job.after for job, _ in settled):
            self.store.insert(settled)
            return
        history_of = {job.id: history for job, history in settled}
        for _ in range(MAX_ROUNDS):
            ready, guards = graph.placed(self.store, [job for job, _ in settled], now,
                                         imported=True)
            try:
                self.store.insert([(job, history_of[job.id]) for job in ready], guards)
            except ChangedMeanwhile:
                continue
            return
        raise StorageError("the jobs to run after kept changing; try again")

    # ---------------------------------------------------------- claims
    def claim(self, worker_id: str, now: int, lease_ms: int,
              queues: Sequence[str] | None = None) -> Claim | None:
        """Claim the next due job, or None."""
        claims = self.store.claim(worker_id, now, lease_ms, queues, 1)
        return claims[0] if claims else None

    def renew(self, claim: Claim, now: int, lease_ms: int) -> Job | None:
        """Extend the claim's lease: the job as stored now, or None if the
        claim is no longer held."""
        return self._held(claim, claim.job,
                          lambda job: rules.renewed(job, claim.token, now=now, lease_ms=lease_ms))

    def complete(self, claim: Claim, result: ExecResult, now: int) -> Job | None:
        """Record the claim's attempt as completed (whatever ``result`` says)."""
        return self.record_and_claim([Outcome(claim, result, ok=True)], now,
                                     worker_id=claim.worker_id, lease_ms=0, limit=0)[0][0]

    def fail(self, claim: Claim, result: ExecResult, now: int, retry_at: int | None
             ) -> Job | None:
        """Record the claim's attempt as failed: the job runs again at
        ``retry_at``, or is dead (None), or cancelled if that was asked."""
        return self.record_and_claim([Outcome(claim, result, retry_at, ok=False)], now,
                                     worker_id=claim.worker_id, lease_ms=0, limit=0)[0][0]

    def record_and_claim(self, outcomes: Sequence[Outcome], now: int, *, worker_id: str,
                         lease_ms: int, queues: Sequence[str] | None = None, limit: int = 1
                         ) -> tuple[list[Job | None], list[Claim]]:
        """Record finished attempts (``transitions.finished``), then claim up
        to ``limit`` jobs, in one store call where the store can. Returns,
        for each outcome, the job as recorded (None: the claim was no longer
        held), and the claims made, in claim order."""
        def claim_after(changes: Sequence[Change], atomic: bool = False
                        ) -> tuple[list[Job | None], list[Claim]]:
            return self.store.apply_and_claim(changes, worker_id=worker_id, now=now,
                                              lease_ms=lease_ms, queues=queues, limit=limit,
                                              atomic=atomic)

        if len(outcomes) == 1 and outcomes[0].claim.job.dependents:
            # One result others run after (a chain's link): made with what it
            # means for them, all or nothing, in the call that claims; the
            # claim may take a job it released.
            made = self._finish_parent(outcomes[0], now, claim_after)
            if made is not None:
                return made
        # Otherwise a job others run after is recorded first, as it is now,
        # with their changes, on its own (all or nothing), so that the claim
        # below can take a job it released; the rest in one batch with it.
        by_outcome: dict[int, Job | None] = {
            id(o): self._held(o.claim, None, _deciding_finish(o, now))
            for o in outcomes if o.claim.job.dependents}
        plain = [o for o in outcomes if not o.claim.job.dependents]
        recorded, claims = claim_after([rules.finished(o.claim.job, o, now) for o in plain])
        by_outcome.update((id(o), job) for o, job in zip(plain, recorded, strict=True))
        done: list[Job | None] = []
        for outcome in outcomes:
            job = by_outcome[id(outcome)]
            if job is None and not outcome.claim.job.dependents:
                job = self._held(outcome.claim, None, _deciding_finish(outcome, now))
            done.append(job)
        return done, claims

    def _finish_parent(self, outcome: Outcome, now: int,
                       claim_after: Callable[[Sequence[Change], bool],
                                             tuple[list[Job | None], list[Claim]]]
                       ) -> tuple[list[Job | None], list[Claim]] | None:
        """Record a job others run after as its claim knew it, with what that
        means for them, and claim; None when the job or its children changed
        meanwhile (nothing was made nor claimed: decide again from the store)."""
        job = outcome.claim.job
        change = rules.finished(job, outcome, now)
        follow = graph.consequences(self.store, [(job, change)], now_ms())
        done, claims = claim_after([change, *follow], True)
        if done[0] is None:
            return None
        claimed = {c.job.id for c in claims}
        if self.on_release is not None and any(
                c.fields.get("state") is JobState.PENDING and c.job_id not in claimed
                for c in follow):
            self.on_release()
        return done[:1], claims

    def _apply_decided(self, decided: Sequence[tuple[Job, Change]]) -> list[Job | None]:
        """Make the changes decided for jobs as read, with what they mean
        for the jobs that run after them (``dependencies.consequences``),
        in one store call: all or nothing when there are such jobs."""
        changes = [change for _, change in decided]
        if not any(job.dependents for job, _ in decided):
            return self.store.apply(changes)
        follow = graph.consequences(self.store, decided, now_ms())
        if not follow:
            return self.store.apply(changes)
        done = self.store.apply([*changes, *follow], atomic=True)
        if self.on_release is not None and done[0] is not None and any(
                c.fields.get("state") is JobState.PENDING for c in follow):
            self.on_release()
        return done[:len(changes)]

    def release(self, claim: Claim, now: int) -> Job | None:
        """Give back a claim whose command never started (``transitions.
        released``): the job as it is now, or None if it was not held."""
        # While the job holds the claim, the claim's attempt is its latest.
        history = self.store.attempts(claim.job.id)[:-1]
        before = history[-1] if history else None
        return self._held(claim, claim.job,
                          lambda job: rules.released(job, before, now=now))

    def _held(self, claim: Claim, job: Job | None, decide: Callable[[Job], Change]
              ) -> Job | None:
        """Make the change ``decide`` gives for the job while ``claim`` holds
        it (``job``: as known, or None to read it first)."""
        for _ in range(MAX_ROUNDS):
            if job is None:
                job = self.store.get(claim.job.id)
            if not rules.holds(job, claim.token):
                return None
            assert job is not None
            [done] = self._apply_decided([(job, decide(job))])
            if done is not None:
                return done
            job = None
        raise StorageError(f"job {claim.job.id!r} kept changing; try again")

    # ---------------------------------------------------------- recovery
    def recover_expired(self, now: int, worker_id: str | None = None, *,
                        charge_attempt: bool = True) -> list[Job]:
        """Take back jobs whose lease expired; or, with ``worker_id``, every
        job that worker holds (it is known to be gone, or was stopped by
        force). ``transitions.taken_back`` decides. Returns the jobs as they
        are now."""
        def stale(job: Job | None) -> bool:
            if job is None or job.state is not JobState.PROCESSING:
                return False
            if worker_id is not None:
                return job.worker_id == worker_id
            return job.lease_expires_at is not None and job.lease_expires_at < now

        if worker_id is None:
            jobs = self.store.expired(now)
        else:
            jobs = [j for j in self.store.list_jobs(JobState.PROCESSING) if stale(j)]
        recovered = self._settle_all(
            jobs, stale, lambda job: rules.taken_back(job, now=now, charge=charge_attempt))
        return [job for job in recovered if job is not None]

    def _settle_all(self, jobs: Sequence[Job], still: Callable[[Job | None], bool],
                    decide: Callable[[Job], Change]) -> list[Job | None]:
        """Decide and make a change for each job, in one store call; jobs
        that changed meanwhile are read and decided again while ``still``
        holds for them."""
        jobs = [job for job in jobs if still(job)]
        done = self._apply_decided([(job, decide(job)) for job in jobs]) if jobs else []
        for i, (job, result) in enumerate(zip(jobs, done, strict=True)):
            rounds = 0
            while result is None and rounds < MAX_ROUNDS:
                rounds += 1
                current = self.store.get(job.id)
                if not still(current):
                    break
                assert current is not None
                [result] = self._apply_decided([(current, decide(current))])
            done[i] = result
        return done

    # ---------------------------------------------------------- operators
    def cancel(self, job_id: str, now: int) -> Job:
        """``queuectl cancel`` (``transitions.cancelled``): the job as stored.
        Raises JobNotFoundError, or InvalidStateError for a finished job."""
        return self._change(job_id, lambda job: rules.cancelled(job, now=now))

    def dlq_retry(self, job_id: str, now: int) -> Job:
        """``queuectl dlq retry`` (``transitions.revived``). Raises
        JobNotFoundError, or InvalidStateError for a job that is not dead."""
        return self._change(job_id, lambda job: rules.revived(job, now=now))

    def _change(self, job_id: str, decide: Callable[[Job], Change | None]) -> Job:
        for _ in range(MAX_ROUNDS):
            job = self.store.get(job_id)
            if job is None:
                raise JobNotFoundError(job_id)
            change = decide(job)
            if change is None:
                return job
            [done] = self._apply_decided([(job, change)])
            if done is not None:
                return done
        raise StorageError(f"job {job_id!r} kept changing; try again")

    def purge(self, *, states: Sequence[JobState], finished_before: int | None = None,
              ids: Sequence[str] | None = None, limit: int | None = None) -> list[str]:
        """Delete finished jobs with their history, in one step: those in
        one of ``states`` (``completed``, ``dead``, ``cancelled``, ``skipped``; ValueError
        otherwise), finished before ``finished_before`` if given, with an id
        in ``ids`` if given, at most ``limit`` (oldest first). Returns the
        ids deleted."""
        jobs = self.purgeable(states=states, finished_before=finished_before, ids=ids,
                              limit=limit)
        done = self.store.apply([rules.purged(job) for job in jobs]) if jobs else []
        return [job.id for job, gone in zip(jobs, done, strict=True) if gone is not None]

    def purgeable(self, *, states: Sequence[JobState], finished_before: int | None = None,
                  ids: Sequence[str] | None = None, limit: int | None = None) -> list[Job]:
        """The jobs :meth:`purge` would delete with the same arguments, in the
        order it deletes them (a read: ``purge --dry-run``)."""
        wanted = [JobState(s) for s in states]
        if any(s not in FINISHED_STATES for s in wanted):
            raise ValueError("only completed, dead, cancelled and skipped jobs can be purged")
        if not wanted or limit == 0 or (ids is not None and not ids):
            return []
        if ids is None:
            return self.store.finished(wanted, finished_before, limit)
        jobs = self._finished_by_id(ids, wanted, finished_before)
        return jobs if limit is None else jobs[:limit]

    def _finished_by_id(self, ids: Sequence[str], wanted: list[JobState],
                        before: int | None) -> list[Job]:
        """The jobs of ``ids`` that ``purge`` may delete, oldest first, ties
        in enqueue order (read from the store only when there are ties)."""
        found = (self.store.get(job_id) for job_id in dict.fromkeys(ids))
        jobs = [job for job in found if job is not None and job.state in wanted
                and (before is None or rules.finished_at(job) < before)]
        times = [rules.finished_at(job) for job in jobs]
        if len(set(times)) < len(times):
            chosen = {job.id for job in jobs}
            pool = (self.store.list_jobs(wanted[0]) if len(wanted) == 1
                    else self.store.list_jobs())
            jobs = [job for job in pool if job.id in chosen]
        jobs.sort(key=rules.finished_at)  # stable: ties stay in enqueue order
        return jobs

    # ---------------------------------------------------------- the store
    def wakeup_fileno(self) -> int | None:
        return self.store.wakeup_fileno()

    def drain_wakeups(self) -> None:
        self.store.drain_wakeups()

    def local_paths(self) -> list[Path]:
        return self.store.local_paths()

    def describe(self) -> str:
        return self.store.describe()

    def close(self) -> None:
        self.store.close()
