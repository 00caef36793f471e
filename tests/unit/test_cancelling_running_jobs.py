"""``queuectl cancel`` of a job a worker is running: the worker stops the
command (at its next renewal, or at once when the cancel signals the
command's group) and records the job ``cancelled``, never retried. Against
the in-memory store (through the Ledger) and real processes."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from queuectl_core.executor import Execution
from queuectl_core.ledger import Ledger
from queuectl_core.models import Claim, Job, JobState
from queuectl_core.settings import Settings
from queuectl_core.testing import MemoryStorage
from queuectl_core.timeutil import now_ms
from queuectl_shell.executor import ShellExecutor
from tests.unit.worker_harness import add, make_worker


class CancelAtFirstRenewal(Ledger):
    """``queuectl cancel`` (from another machine: no signal) right after the
    worker's first renewal."""

    def renew(self, claim: Claim, now: int, lease_ms: int) -> Job | None:
        renewed = super().renew(claim, now, lease_ms)
        job = self.get(claim.job.id)
        if job is not None and job.cancel_requested_at is None:
            self.cancel(claim.job.id, now)
        return renewed


def test_a_cancel_stops_a_running_job_at_the_next_renewal(tmp_path: Path) -> None:
    ledger = CancelAtFirstRenewal(MemoryStorage())
    add(ledger, "c", "sleep 30")
    # lease_seconds=3 -> the worker renews (and sees a cancel) every second.
    worker = make_worker(ledger, tmp_path, Settings(worker_idle_delay=10, lease_seconds=3))
    started = time.monotonic()
    worker.run_once()
    assert time.monotonic() - started < 10
    job = ledger.get("c")
    assert job is not None and job.state is JobState.CANCELLED
    assert job.claim_token is None and job.lease_expires_at is None
    [attempt] = ledger.attempts("c")
    assert attempt.outcome == "cancelled" and "cancelled while running" in (attempt.error or "")


class CancelOnStart(ShellExecutor):
    """``queuectl cancel`` on the worker's machine: the cancel is stored,
    then the command's process group gets SIGTERM at once."""

    def __init__(self, ledger: Ledger) -> None:
        super().__init__()
        self.ledger = ledger

    def start(self, job: Job, **kwargs: Any) -> Execution:
        execution = super().start(job, **kwargs)
        self.ledger.cancel(job.id, now_ms())
        assert execution.pgid is not None
        os.killpg(execution.pgid, signal.SIGTERM)
        return execution


def test_a_cancel_signalled_from_outside_is_not_retried(tmp_path: Path) -> None:
    """The failure that follows the signal is recorded as cancelled."""
    ledger = Ledger(MemoryStorage())
    add(ledger, "c", "sleep 30")
    worker = make_worker(ledger, tmp_path, executor=CancelOnStart(ledger))
    started = time.monotonic()
    worker.run_once()
    assert time.monotonic() - started < 10
    job = ledger.get("c")
    assert job is not None and job.state is JobState.CANCELLED
    assert [a.outcome for a in ledger.attempts("c")] == ["cancelled"]
