"""A worker's housekeeping (``queuectl_core.worker.housekeeping``): taking
back jobs whose lease expired, killing what a dead worker left running
(found by its environment), and retention of old finished jobs with their
output. Against the in-memory store (through the Ledger)."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from queuectl_core.joblogs import job_log_dir
from queuectl_core.ledger import Ledger
from queuectl_core.models import JobState
from queuectl_core.plugins import build_plugins
from queuectl_core.settings import Settings
from queuectl_core.testing import MemoryStorage
from queuectl_core.timeutil import now_ms
from queuectl_core.worker.housekeeping import RETENTION_EVERY_MS, kill_orphaned_commands
from tests.unit.worker_harness import Recorder, add, make_worker


def test_housekeeping_takes_back_jobs_whose_lease_expired(tmp_path: Path) -> None:
    recorder = Recorder()
    plugins = build_plugins(entry_points=False)
    plugins.register(recorder, "recorder")
    ledger = Ledger(MemoryStorage())
    add(ledger, "orphan", "true", max_retries=0)
    assert ledger.claim("ghost", now_ms(), 1) is not None  # a 1 ms lease, never renewed
    worker = make_worker(ledger, tmp_path, plugins=plugins)
    worker.housekeeping(now_ms() + 10)
    job = ledger.get("orphan")
    assert job is not None and job.state is JobState.DEAD  # its only attempt was lost
    assert [a.outcome for a in ledger.attempts("orphan")] == ["lost"]
    assert ("lost", "orphan") in recorder.events and recorder.dead == ["orphan"]
    assert [w.id for w in ledger.list_workers()] == [worker.id], "the heartbeat registers it"


def test_retention_purges_old_finished_jobs_and_their_logs(tmp_path: Path) -> None:
    ledger = Ledger(MemoryStorage())
    add(ledger, "old", "echo old")
    add(ledger, "dead", "exit 1", max_retries=0)
    worker = make_worker(ledger, tmp_path, Settings(worker_idle_delay=10, retention_days=1))
    worker.run_once()
    worker.run_once()
    assert job_log_dir(tmp_path / "logs", "old").exists()
    keeper, later = worker.keeper, now_ms() + 86_400_000
    assert keeper.apply_retention(later - 2000, 1) == [], "not old enough"
    assert keeper.apply_retention(later + 1000, 1) == [], (
        f"retention runs at most every {RETENTION_EVERY_MS} ms")
    keeper._retention_at = 0
    assert keeper.apply_retention(later + 1000, 0) == [], "0 days: kept forever"
    assert keeper.apply_retention(later + 1000, 1) == ["old"]
    assert ledger.get("old") is None and ledger.get("dead") is not None, "the DLQ is kept"
    assert not job_log_dir(tmp_path / "logs", "old").exists()


def test_housekeeping_applies_the_retention_setting(tmp_path: Path) -> None:
    ledger = Ledger(MemoryStorage())
    add(ledger, "old", "true")
    worker = make_worker(ledger, tmp_path, Settings(worker_idle_delay=10,
                                                    retention_days=0.5))
    worker.run_once()
    worker.keeper._retention_at = 0
    worker.housekeeping(now_ms() + 43_200_000 + 1000)
    assert ledger.get("old") is None


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds processes through /proc")
def test_an_orphaned_command_of_a_dead_worker_is_found_by_its_environment() -> None:
    """A worker SIGKILLed right after starting a command never recorded its
    process group; releasing its job must still kill the command."""
    ledger = Ledger(MemoryStorage())
    add(ledger, "orphan", "sleep 60")
    claim = ledger.claim("dead-worker", now_ms(), 60_000)
    assert claim is not None
    env = {**os.environ, "QUEUECTL_JOB_ID": "orphan", "QUEUECTL_ATTEMPT": str(claim.attempt),
           "QUEUECTL_WORKER_ID": "dead-worker"}
    other = {**env, "QUEUECTL_ATTEMPT": "99"}
    # Another queue's job of the same id and attempt, under another worker.
    twin = {**env, "QUEUECTL_WORKER_ID": "host:1:elsewhere"}
    victim = subprocess.Popen(["/bin/sh", "-c", "sleep 60 & wait"], env=env,
                              start_new_session=True)
    bystanders = [subprocess.Popen(["sleep", "60"], env=e, start_new_session=True)
                  for e in (other, twin)]
    try:
        kill_orphaned_commands(ledger, "dead-worker")
        assert victim.wait(timeout=10) == -signal.SIGKILL
        assert [b.poll() for b in bystanders] == [None, None], (
            "another attempt's process, and another worker's, are left alone")
    finally:
        for proc in (victim, *bystanders):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
