"""An in-memory store: the smallest complete backend, for tests and as an
example for plugin authors. One process only; nothing survives it.

It implements the thirteen required methods of the seam and nothing more:
claims come from the default ``Storage.claim`` (``due`` candidates taken by
compare-and-set through ``apply``)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from ..errors import DuplicateJobError
from ..models import CLAIMABLE_STATES, Attempt, Change, Job, JobState, WorkerInfo
from ..storage import Storage, claim_order


class MemoryStorage(Storage):
    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._jobs: dict[str, Job] = {}  # insertion order is enqueue order
        self._history: dict[str, list[tuple[str, Attempt]]] = {}  # (claim token, attempt)
        self._settings: dict[str, Any] = {}
        self._workers: dict[str, WorkerInfo] = {}
        self._paused: set[str] = set()

    def insert(self, records: Sequence[tuple[Job, Sequence[Attempt]]]) -> None:
        with self._lock:
            ids = [job.id for job, _ in records]
            for i, job_id in enumerate(ids):
                if job_id in self._jobs or job_id in ids[:i]:
                    raise DuplicateJobError(job_id)
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
        return ready[:limit]

    def apply(self, changes: Sequence[Change]) -> list[Job | None]:
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
                self._jobs[job.id] = job = change.applied(job)
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
