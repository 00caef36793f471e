"""An in-memory store: the smallest complete backend, for tests and as an
example for plugin authors. One process only; nothing survives it."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence
from typing import Any

from ..errors import DuplicateJobError, InvalidStateError, JobNotFoundError
from ..models import (
    CLAIMABLE_STATES,
    FINISHED_STATES,
    Attempt,
    Claim,
    ExecResult,
    Job,
    JobState,
    NewJob,
    WorkerInfo,
)
from ..storage import CANCELLED_ERROR, INTERRUPTED_ATTEMPT_ERROR, LOST_ATTEMPT_ERROR, Storage


class MemoryStorage(Storage):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}          # insertion order = enqueue order
        self._seq: dict[str, int] = {}
        self._tokens: dict[str, str] = {}        # job id -> current claim token
        self._attempts: list[tuple[str, Attempt]] = []  # (token, attempt)
        self._settings: dict[str, Any] = {}
        self._workers: dict[str, WorkerInfo] = {}
        self._paused: set[str] = set()
        self._next = 0

    # jobs
    def enqueue(self, jobs: Sequence[NewJob]) -> None:
        with self._lock:
            ids = [j.id for j in jobs]
            for i, job_id in enumerate(ids):
                if job_id in self._jobs or job_id in ids[:i]:
                    raise DuplicateJobError(job_id)
            for j in jobs:
                self._next += 1
                self._seq[j.id] = self._next
                self._jobs[j.id] = Job(
                    id=j.id, command=j.command, state=JobState.PENDING, max_retries=j.max_retries,
                    priority=j.priority, run_at=j.run_at, created_at=j.created_at,
                    updated_at=j.created_at, queue=j.queue, timeout=j.timeout, cwd=j.cwd,
                    env=j.env, retry=j.retry,
                )

    def import_jobs(self, records: Sequence[tuple[Job, Sequence[Attempt]]]) -> None:
        with self._lock:
            ids = [job.id for job, _ in records]
            for i, job_id in enumerate(ids):
                if job_id in self._jobs or job_id in ids[:i]:
                    raise DuplicateJobError(job_id)
            for job, history in records:
                self._next += 1
                self._seq[job.id] = self._next
                self._jobs[job.id] = job
                for attempt in history:
                    self._attempts.append((uuid.uuid4().hex, attempt))

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def attempts(self, job_id: str) -> list[Attempt]:
        return [a for _, a in self._attempts if a.job_id == job_id]

    def list_jobs(self, state: JobState | None = None, limit: int | None = None, *,
                  queue: str | None = None) -> list[Job]:
        jobs = [j for j in self._jobs.values()
                if (state is None or j.state is state) and (queue is None or j.queue == queue)]
        return jobs[:limit] if limit is not None else jobs

    def counts(self, queue: str | None = None) -> dict[JobState, int]:
        counts = dict.fromkeys(JobState, 0)
        for job in self._jobs.values():
            if queue is None or job.queue == queue:
                counts[job.state] += 1
        return counts

    def _claimable(self, queues: Sequence[str] | None) -> list[Job]:
        return [j for j in self._jobs.values()
                if j.state in CLAIMABLE_STATES and j.queue not in self._paused
                and (queues is None or j.queue in queues)]

    def next_run_at(self, queues: Sequence[str] | None = None) -> int | None:
        due = [j.run_at for j in self._claimable(queues)]
        return min(due) if due else None

    # claims
    def claim(self, worker_id: str, now: int, lease_ms: int,
              queues: Sequence[str] | None = None) -> Claim | None:
        with self._lock:
            ready = [j for j in self._claimable(queues) if j.run_at <= now]
            if not ready:
                return None
            best = min(ready, key=lambda j: (-j.priority, j.run_at, self._seq[j.id]))
            token = uuid.uuid4().hex
            job = best.replace(**{
                "state": JobState.PROCESSING, "attempts": best.attempts + 1,
                "worker_id": worker_id, "lease_expires_at": now + lease_ms,
                "started_at": now, "finished_at": None, "updated_at": now,
            })
            number = 1 + sum(1 for _, a in self._attempts if a.job_id == job.id)
            self._jobs[job.id] = job
            self._tokens[job.id] = token
            self._attempts.append((token, Attempt(job_id=job.id, number=number,
                                                  worker_id=worker_id, started_at=now)))
            return Claim(job=job, token=token, worker_id=worker_id, attempt=number,
                         lease_expires_at=now + lease_ms)

    def _holds(self, claim: Claim) -> Job | None:
        job = self._jobs.get(claim.job.id)
        if (job is None or job.state is not JobState.PROCESSING
                or self._tokens.get(job.id) != claim.token):
            return None
        return job

    def _close_attempt(self, token: str, **changes: Any) -> None:
        for i, (t, a) in enumerate(self._attempts):
            if t == token:
                self._attempts[i] = (t, a.replace(**changes))

    def renew(self, claim: Claim, now: int, lease_ms: int) -> bool:
        with self._lock:
            job = self._holds(claim)
            if job is None:
                return False
            self._jobs[job.id] = job.replace(**{"lease_expires_at": now + lease_ms})
            return True

    def _finish(self, claim: Claim, result: ExecResult, now: int, state: JobState,
                retry_at: int | None, outcome: str) -> Job | None:
        with self._lock:
            job = self._holds(claim)
            if job is None:
                return None
            if state is not JobState.COMPLETED and job.cancel_requested_at is not None:
                state, retry_at, outcome = JobState.CANCELLED, None, "cancelled"
            done = job.replace(**{
                "state": state, "run_at": job.run_at if retry_at is None else retry_at,
                "last_error": None if state is JobState.COMPLETED else result.error,
                "exit_code": result.exit_code, "finished_at": now, "updated_at": now,
                "lease_expires_at": None,
            })
            self._jobs[job.id] = done
            del self._tokens[job.id]
            self._close_attempt(claim.token, finished_at=now, outcome=outcome,
                                exit_code=result.exit_code, signal=result.signal,
                                error=result.error, stdout_tail=result.stdout_tail,
                                stderr_tail=result.stderr_tail)
            return done

    def complete(self, claim: Claim, result: ExecResult, now: int) -> Job | None:
        return self._finish(claim, result, now, JobState.COMPLETED, None, "completed")

    def fail(self, claim: Claim, result: ExecResult, now: int, retry_at: int | None
             ) -> Job | None:
        state = JobState.FAILED if retry_at is not None else JobState.DEAD
        return self._finish(claim, result, now, state, retry_at, "failed")

    def due_count(self, now: int, queues: Sequence[str] | None = None, limit: int = 1
                  ) -> int | None:
        with self._lock:
            return min(limit, sum(1 for j in self._claimable(queues) if j.run_at <= now))

    def release(self, claim: Claim, now: int) -> Job | None:
        with self._lock:
            job = self._holds(claim)
            if job is None:
                return None
            self._attempts = [(t, a) for t, a in self._attempts if t != claim.token]
            before = [a for _, a in self._attempts if a.job_id == job.id]
            attempts = job.attempts - 1
            changes: dict[str, Any] = {
                "attempts": attempts, "updated_at": now, "lease_expires_at": None,
                "state": JobState.PENDING if attempts == 0 else JobState.FAILED,
                "worker_id": before[-1].worker_id if before else None,
                "started_at": before[-1].started_at if before and attempts else None,
                "finished_at": before[-1].finished_at if before and attempts else None,
            }
            if job.cancel_requested_at is not None:
                changes.update(state=JobState.CANCELLED, finished_at=now,
                               last_error=CANCELLED_ERROR)
            released = job.replace(**changes)
            self._jobs[job.id] = released
            del self._tokens[job.id]
            return released

    def recover_expired(self, now: int, worker_id: str | None = None, *,
                        charge_attempt: bool = True) -> list[Job]:
        recovered = []
        with self._lock:
            for job in list(self._jobs.values()):
                if job.state is not JobState.PROCESSING:
                    continue
                if worker_id is not None:
                    if job.worker_id != worker_id:
                        continue
                elif job.lease_expires_at is None or job.lease_expires_at >= now:
                    continue
                attempts = job.attempts
                if charge_attempt:
                    error, outcome = LOST_ATTEMPT_ERROR.format(worker=job.worker_id), "lost"
                    state = JobState.DEAD if attempts > job.max_retries else JobState.FAILED
                else:
                    outcome = "interrupted"
                    error = INTERRUPTED_ATTEMPT_ERROR.format(worker=job.worker_id)
                    attempts -= 1
                    state = JobState.PENDING if attempts == 0 else JobState.FAILED
                if job.cancel_requested_at is not None:
                    state, outcome = JobState.CANCELLED, "cancelled"
                new = job.replace(**{
                    "state": state, "attempts": attempts, "run_at": now, "last_error": error,
                    "exit_code": None, "finished_at": now, "updated_at": now,
                    "lease_expires_at": None,
                })
                self._jobs[job.id] = new
                token = self._tokens.pop(job.id)
                self._close_attempt(token, finished_at=now, outcome=outcome, error=error)
                recovered.append(new)
        return recovered

    def dlq_retry(self, job_id: str, now: int) -> Job:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                raise JobNotFoundError(job_id)
            if job.state is not JobState.DEAD:
                raise InvalidStateError(f"job {job_id!r} is {job.state.value}, not dead")
            new = job.replace(**{
                "state": JobState.PENDING, "attempts": 0, "run_at": now, "updated_at": now,
                "started_at": None, "finished_at": None, "exit_code": None,
            })
            self._jobs[job_id] = new
            return new

    def cancel(self, job_id: str, now: int) -> Job:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                raise JobNotFoundError(job_id)
            if job.state in FINISHED_STATES:
                raise InvalidStateError(f"job {job_id!r} is {job.state.value} already")
            if job.state is JobState.PROCESSING:
                if job.cancel_requested_at is None:
                    job = job.replace(cancel_requested_at=now, updated_at=now)
            else:
                job = job.replace(state=JobState.CANCELLED, finished_at=now, updated_at=now,
                                  last_error=CANCELLED_ERROR, cancel_requested_at=now)
            self._jobs[job_id] = job
            return job

    def purge(self, *, states: Sequence[JobState], finished_before: int | None = None,
              ids: Sequence[str] | None = None, limit: int | None = None) -> list[str]:
        if any(s not in FINISHED_STATES for s in states):
            raise ValueError("only completed, dead and cancelled jobs can be purged")
        with self._lock:
            wanted = None if ids is None else set(ids)
            found = [j for j in self._jobs.values()
                     if j.state in states and (wanted is None or j.id in wanted)
                     and (finished_before is None
                          or (j.finished_at if j.finished_at is not None else j.updated_at)
                          < finished_before)]
            found.sort(key=lambda j: (j.finished_at if j.finished_at is not None
                                      else j.updated_at, self._seq[j.id]))
            gone = [j.id for j in (found if limit is None else found[:limit])]
            drop = set(gone)
            for job_id in gone:
                del self._jobs[job_id]
                del self._seq[job_id]
            self._attempts = [(t, a) for t, a in self._attempts if a.job_id not in drop]
            return gone

    def set_queue_paused(self, queue: str, paused: bool) -> bool:
        with self._lock:
            if (queue in self._paused) == paused:
                return False
            if paused:
                self._paused.add(queue)
            else:
                self._paused.discard(queue)
            return True

    def paused_queues(self) -> list[str]:
        return sorted(self._paused)

    # settings
    def get_settings(self) -> dict[str, Any]:
        return dict(self._settings)

    def set_setting(self, key: str, value: Any) -> None:
        self._settings[key] = value

    # workers
    def register_worker(self, worker: WorkerInfo) -> None:
        self._workers[worker.id] = worker

    def worker_heartbeat(self, worker_id: str, now: int, current_job: str | None,
                         job_pgid: int | None) -> None:
        w = self._workers.get(worker_id)
        if w is not None:
            self._workers[worker_id] = w.replace(**{
                "heartbeat_at": now, "current_job": current_job, "job_pgid": job_pgid})

    def unregister_worker(self, worker_id: str) -> None:
        self._workers.pop(worker_id, None)

    def list_workers(self) -> list[WorkerInfo]:
        return list(self._workers.values())

    def prune_workers(self, heartbeat_before: int) -> int:
        stale = [k for k, w in self._workers.items() if w.heartbeat_at < heartbeat_before]
        for k in stale:
            del self._workers[k]
        return len(stale)

    def describe(self) -> str:
        return "memory"
