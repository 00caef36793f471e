"""What the worker tests share: a worker on a given ledger with the real
shell executor, a way to add a job, a plugin that records job events, and
a ledger that notes the calls the worker makes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from queuectl_core import hookimpl
from queuectl_core.builtin import ExponentialBackoff
from queuectl_core.ledger import Ledger
from queuectl_core.models import Attempt, Claim, Job, Outcome
from queuectl_core.plugins import Plugins, build_plugins
from queuectl_core.settings import Settings
from queuectl_core.storage import Storage
from queuectl_core.testing import MemoryStorage
from queuectl_core.timeutil import now_ms
from queuectl_core.worker.loop import Worker
from queuectl_shell.executor import ShellExecutor


def make_worker(ledger: Ledger, tmp_path: Path, settings: Settings | None = None, *,
                plugins: Plugins | None = None, executor: ShellExecutor | None = None,
                **worker_options: Any) -> Worker:
    """A worker with exponential backoff, logs under ``tmp_path``, and
    ``settings`` (default: only a 10 s idle delay)."""
    s = settings or Settings(worker_idle_delay=10)
    return Worker(ledger=ledger, executor=executor or ShellExecutor(),
                  policy=ExponentialBackoff(),
                  plugins=plugins or build_plugins(entry_points=False),
                  settings_loader=lambda _: s, log_root=tmp_path / "logs", **worker_options)


def add(ledger: Ledger, job_id: str, command: str, max_retries: int = 3,
        **fields: Any) -> None:
    """Enqueue one job, due now."""
    now = now_ms()
    ledger.enqueue([Job.new(id=job_id, command=command, max_retries=max_retries, run_at=now,
                            created_at=now, **fields)])


class Recorder:
    """A plugin that notes job events and dead jobs."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.dead: list[str] = []

    @hookimpl
    def queuectl_job_event(self, event: str, job: Job, attempt: Attempt | None) -> None:
        self.events.append((event, job.id))

    @hookimpl
    def queuectl_job_dead(self, job: Job) -> None:
        self.dead.append(job.id)


def recording_plugins(recorder: Recorder) -> Plugins:
    plugins = build_plugins(entry_points=False)
    plugins.register(recorder, "recorder")
    return plugins


class CountingLedger(Ledger):
    """Notes the calls the worker makes to record results, claim and give
    back: ``record [a b] +2`` is one ``record_and_claim`` of a's and b's
    results that claims up to 2 jobs. Keeps every outcome recorded."""

    def __init__(self, store: Storage | None = None) -> None:
        super().__init__(store or MemoryStorage())
        self.calls: list[str] = []
        self.outcomes: list[Outcome] = []

    def claim(self, worker_id: str, now: int, lease_ms: int,
              queues: Sequence[str] | None = None) -> Claim | None:
        self.calls.append("claim")
        return super().claim(worker_id, now, lease_ms, queues)

    def record_and_claim(self, outcomes: Sequence[Outcome], now: int, *, worker_id: str,
                         lease_ms: int, queues: Sequence[str] | None = None, limit: int = 1
                         ) -> tuple[list[Job | None], list[Claim]]:
        ids = " ".join(o.claim.job.id for o in outcomes)
        self.calls.append(f"record [{ids}] +{limit}")
        self.outcomes.extend(outcomes)
        return super().record_and_claim(outcomes, now, worker_id=worker_id, lease_ms=lease_ms,
                                        queues=queues, limit=limit)

    def release(self, claim: Claim, now: int) -> Job | None:
        self.calls.append(f"release {claim.job.id}")
        return super().release(claim, now)
