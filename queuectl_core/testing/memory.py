"""An in-memory store: the smallest complete backend, for tests and as an
example for plugin authors. One process only; nothing survives it.

It implements the thirteen required methods of the seam, and ``claim`` under
its lock (``due`` candidates taken by compare-and-set through ``apply``, as
the default ``Storage.claim`` does), which keeps concurrency limits exact
among threads."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from ..errors import ChangedMeanwhile, DuplicateJobError, UniqueKeyError
from ..models import (
    CLAIMABLE_STATES,
    UNFINISHED_STATES,
    Attempt,
    Change,
    Claim,
    Job,
    JobState,
    WorkerInfo,
)
from ..storage import LIMITS_SETTING, Storage, claim_order, concurrency_limit


class MemoryStorage(Storage):
    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._jobs: dict[str, Job] = {}  # insertion order is enqueue order
        self._history: dict[str, list[tuple[str, Attempt]]] = {}  # (claim token, attempt)
        self._settings: dict[str, Any] = {}
        self._workers: dict[str, WorkerInfo] = {}
        self._paused: set[str] = set()

    def insert(self, records: Sequence[tuple[Job, Sequence[Attempt]]],
               changes: Sequence[Change] = ()) -> None:
        with self._lock:
            ids = [job.id for job, _ in records]
            seen: set[str] = set()
            for job_id in ids:
                if job_id in self._jobs or job_id in seen:
                    raise DuplicateJobError(job_id)
                seen.add(job_id)
            for job, _ in records:
                self._check_unique(job)
            if not all(c.applies_to(self._jobs.get(c.job_id)) for c in changes):
                raise ChangedMeanwhile("a job changed meanwhile")
            self.apply(changes)
            for job, history in records:
                self._jobs[job.id] = job
                self._history[job.id] = [(f"imported-{a.number}", a) for a in history]

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def attempts(self, job_id: str) -> list[Attempt]:
        return [a for _, a in self._history.get(job_id, [])]

    def list_jobs(self, state: JobState | None = None, limit: int | None = None, *,
                  queue: str | None = None) -> list[Job]:
        with self._lock:
            jobs = [j for j in self._jobs.values()
                    if (state is None or j.state is state) and (queue is None or j.queue == queue)]
        return jobs[:limit] if limit is not None else jobs

    def due(self, now: int, queues: Sequence[str] | None = None, limit: int = 1) -> list[Job]:
        with self._lock:
            ready = [j for j in self._jobs.values()
                     if j.state in CLAIMABLE_STATES and j.run_at <= now
                     and j.queue not in self._paused and (queues is None or j.queue in queues)]
            ready.sort(key=claim_order)  # stable: ties stay in enqueue order
            limits = self._settings.get(LIMITS_SETTING)
            running: dict[str, int] = {}
            for job in self._jobs.values():
                if job.concurrency_key is not None and job.state is JobState.PROCESSING:
                    running[job.concurrency_key] = running.get(job.concurrency_key, 0) + 1
            picked = []
            for job in ready:
                key = job.concurrency_key
                if key is not None:
                    if running.get(key, 0) >= concurrency_limit(limits, key):
                        continue
                    running[key] = running.get(key, 0) + 1
                picked.append(job)
        return picked[:limit]

    def claim(self, worker_id: str, now: int, lease_ms: int,
              queues: Sequence[str] | None = None, limit: int = 1) -> list[Claim]:
        with self._lock:
            return super().claim(worker_id, now, lease_ms, queues, limit)

    def _check_unique(self, job: Job, replacing: str | None = None) -> None:
        if job.unique_key is None or job.state not in UNFINISHED_STATES:
            return
        for other in self._jobs.values():
            if (other.unique_key == job.unique_key and other.id != replacing
                    and other.state in UNFINISHED_STATES):
                raise UniqueKeyError(job.unique_key, other.id)

    def apply(self, changes: Sequence[Change], *, atomic: bool = False) -> list[Job | None]:
        with self._lock:
            jobs, history = dict(self._jobs), {k: list(v) for k, v in self._history.items()}
            try:
                done = self._apply(changes)
            except UniqueKeyError:
                self._jobs, self._history = jobs, history
                raise
            if atomic and None in done:
                self._jobs, self._history = jobs, history
                return [None] * len(changes)
            return done

    def _apply(self, changes: Sequence[Change]) -> list[Job | None]:
        with self._lock:
            done: list[Job | None] = []
            for change in changes:
                job = self._jobs.get(change.job_id)
                if not change.applies_to(job):
                    done.append(None)
                    continue
                assert job is not None
                if change.delete:
                    del self._jobs[job.id]
                    del self._history[job.id]
                    done.append(job)
                    continue
                new = change.applied(job)
                self._check_unique(new, replacing=job.id)
                self._jobs[job.id] = job = new
                if change.attempt is not None:
                    self._change_attempt(job.id, change)
                done.append(job)
            return done

    def _change_attempt(self, job_id: str, change: Change) -> None:
        step = change.attempt
        assert step is not None
        history = self._history[job_id]
        if step.open is not None:
            history.append((step.token, step.open))
        elif step.drop:
            history[:] = [(t, a) for t, a in history if t != step.token]
        else:
            history[:] = [(t, a.replace(**step.fields) if t == step.token else a)
                          for t, a in history]

    def get_settings(self) -> dict[str, Any]:
        return dict(self._settings)

    def set_setting(self, key: str, value: Any) -> None:
        self._settings[key] = value

    def set_queue_paused(self, queue: str, paused: bool) -> bool:
        with self._lock:
            if (queue in self._paused) == paused:
                return False
            (self._paused.add if paused else self._paused.discard)(queue)
            return True

    def paused_queues(self) -> list[str]:
        return sorted(self._paused)

    def put_worker(self, worker: WorkerInfo) -> None:
        self._workers[worker.id] = worker

    def remove_workers(self, worker_ids: Sequence[str]) -> None:
        for worker_id in worker_ids:
            self._workers.pop(worker_id, None)

    def list_workers(self) -> list[WorkerInfo]:
        return sorted(self._workers.values(), key=lambda w: (w.started_at, w.id))

    def describe(self) -> str:
        return "memory"
