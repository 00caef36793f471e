"""What a job asks of the worker that runs it: its queue (and paused
queues), its timeout (or the ``job_timeout`` setting), its own retry policy,
capped output with tails kept in the store, its working directory and
environment. Against the in-memory store (through the Ledger) and the real
shell executor (real processes)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from queuectl_core.builtin import ExponentialBackoff, LinearBackoff
from queuectl_core.joblogs import attempt_path, job_log_dir
from queuectl_core.ledger import Ledger
from queuectl_core.models import JobState
from queuectl_core.retry import BackoffPolicy
from queuectl_core.settings import Settings
from queuectl_core.testing import MemoryStorage
from queuectl_core.worker.loop import Worker
from tests.unit.worker_harness import add, make_worker


def state_of(ledger: Ledger, job_id: str) -> JobState:
    job = ledger.get(job_id)
    assert job is not None
    return job.state


def test_a_worker_serves_only_its_queues(tmp_path: Path) -> None:
    ledger = Ledger(MemoryStorage())
    add(ledger, "mail", "true", queue="mail")
    add(ledger, "other", "true", queue="default")
    worker = make_worker(ledger, tmp_path, queues=["mail"])
    assert worker.run_once()
    assert not worker.run_once(), "the default queue is not served"
    assert state_of(ledger, "mail") is JobState.COMPLETED
    assert state_of(ledger, "other") is JobState.PENDING


def test_a_paused_queue_is_skipped_until_resumed(tmp_path: Path) -> None:
    ledger = Ledger(MemoryStorage())
    add(ledger, "a", "true", queue="q")
    ledger.set_queue_paused("q", True)
    worker = make_worker(ledger, tmp_path)
    started = time.monotonic()
    assert not worker.run_once()
    assert time.monotonic() - started < 5, "a paused job must not keep the worker spinning"
    ledger.set_queue_paused("q", False)
    assert worker.run_once()


def test_a_timeout_kills_the_whole_process_group_and_retries(tmp_path: Path) -> None:
    ledger = Ledger(MemoryStorage())
    pidfile = tmp_path / "child.pid"
    # A background grandchild that would outlive a naive kill of the shell.
    add(ledger, "slow", f"sleep 60 & echo $! > {pidfile}; wait", timeout=0.5, max_retries=1)
    worker = make_worker(ledger, tmp_path)
    started = time.monotonic()
    worker.run_once()
    assert time.monotonic() - started < 10
    job = ledger.get("slow")
    assert job is not None and job.state is JobState.FAILED
    assert job.last_error is not None and job.last_error.startswith("timed out after 0.5 s")
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.02)
    else:
        raise AssertionError("the job's background process survived the timeout")


def test_the_job_timeout_setting_applies_to_jobs_without_their_own(tmp_path: Path) -> None:
    ledger = Ledger(MemoryStorage())
    add(ledger, "t", "sleep 30", max_retries=0)
    add(ledger, "own", "sleep 0.3", max_retries=0, timeout=20.0)
    worker = make_worker(ledger, tmp_path, Settings(worker_idle_delay=10, job_timeout=0.3))
    worker.run_once()
    worker.run_once()
    t, own = ledger.get("t"), ledger.get("own")
    assert t is not None and t.state is JobState.DEAD and "timed out after 0.3 s" in (
        t.last_error or "")
    assert own is not None and own.state is JobState.COMPLETED, "its own timeout wins"


def test_a_jobs_own_retry_policy_and_overrides_set_its_backoff(tmp_path: Path) -> None:
    ledger = Ledger(MemoryStorage())
    add(ledger, "lin", "exit 1", retry={"policy": "linear", "backoff_base": 7.0})
    add(ledger, "capped", "exit 1", retry={"max_delay": 1.0, "backoff_base": 100.0})
    add(ledger, "unknown", "exit 1", retry={"policy": "nope"})
    policies: dict[str, BackoffPolicy] = {"linear": LinearBackoff(),
                                          "exponential": ExponentialBackoff()}

    def resolve(name: str) -> BackoffPolicy:
        return policies[name]

    worker = make_worker(ledger, tmp_path, policy_resolver=resolve)
    for _ in range(3):
        worker.run_once()
    gaps = {}
    for job_id in ("lin", "capped", "unknown"):
        job = ledger.get(job_id)
        assert job is not None and job.state is JobState.FAILED and job.finished_at is not None
        gaps[job_id] = job.run_at - job.finished_at
    assert gaps == {"lin": 7000, "capped": 1000,
                    "unknown": 2000}, "an unknown policy: the configured one"


class RaisingPolicy:
    def delay_seconds(self, attempts: int, settings: Settings) -> float:
        raise ValueError(f"no delay after attempt {attempts}")


def raising_worker(ledger: Ledger, tmp_path: Path,
                   label: Callable[[str | None], str] | None = None) -> Worker:
    worker = make_worker(ledger, tmp_path, policy_resolver=lambda name: RaisingPolicy(),
                         policy_label=label)
    worker.policy = RaisingPolicy()  # the configured one
    return worker


def test_a_policy_that_raises_fails_only_the_attempt_with_the_default_delay(
        tmp_path: Path) -> None:
    """The attempt is failed, its error names the policy, the job waits the
    default exponential delay, and the worker carries on; with no retries
    left the policy is not asked."""
    ledger = Ledger(MemoryStorage())
    add(ledger, "own", "exit 2", retry={"policy": "boom", "backoff_base": 3.0})
    add(ledger, "configured", "exit 2", retry={"backoff_base": 5.0})
    add(ledger, "last", "exit 2", max_retries=0)
    add(ledger, "fine", "true")
    worker = raising_worker(ledger, tmp_path)
    for _ in range(4):
        assert worker.run_once()
    for job_id, gap, named in (("own", 3000, "retry policy 'boom'"),
                               ("configured", 5000, "the configured retry policy")):
        job = ledger.get(job_id)
        assert job is not None and job.state is JobState.FAILED and job.finished_at is not None
        assert job.run_at - job.finished_at == gap, "backoff_base ** 1 seconds"
        [attempt] = ledger.attempts(job_id)
        assert attempt.outcome == "failed" and attempt.exit_code == 2
        assert attempt.error == job.last_error == (
            f"command exited with code 2; {named} failed: ValueError: no delay after "
            "attempt 1; retrying with the default exponential delay")
    last = ledger.get("last")
    assert last is not None and last.state is JobState.DEAD
    assert last.last_error == "command exited with code 2"
    assert state_of(ledger, "fine") is JobState.COMPLETED


def test_a_raising_policy_is_named_as_the_cli_labels_it(tmp_path: Path) -> None:
    ledger = Ledger(MemoryStorage())
    add(ledger, "own", "exit 2", retry={"policy": "boom"})
    add(ledger, "configured", "exit 2")
    asked: list[str | None] = []

    def label(name: str | None) -> str:
        asked.append(name)
        return f"retry policy {name or 'flaky'!r} (from qc-boom 1.0)"

    worker = raising_worker(ledger, tmp_path, label)
    for _ in range(2):
        assert worker.run_once()
    assert asked == ["boom", None]
    for job_id, name in (("own", "boom"), ("configured", "flaky")):
        [attempt] = ledger.attempts(job_id)
        assert attempt.error == (
            f"command exited with code 2; retry policy {name!r} (from qc-boom 1.0) failed: "
            "ValueError: no delay after attempt 1; retrying with the default exponential delay")


def test_output_is_capped_on_disk_and_its_tails_are_stored(tmp_path: Path) -> None:
    ledger = Ledger(MemoryStorage())
    add(ledger, "big", "head -c 300000 /dev/zero | tr '\\0' x; echo; echo end; echo err >&2")
    worker = make_worker(ledger, tmp_path, Settings(worker_idle_delay=10,
                                                    output_max_bytes=100_000,
                                                    output_tail_bytes=16))
    worker.run_once()
    [attempt] = ledger.attempts("big")
    assert attempt.outcome == "completed"
    assert attempt.stdout_tail is not None and attempt.stdout_tail.endswith("end\n")
    assert len(attempt.stdout_tail.encode()) <= 16 and attempt.stderr_tail == "err\n"
    log_dir = job_log_dir(tmp_path / "logs", "big")
    out = attempt_path(log_dir, 1, "out")
    on_disk = sum(p.stat().st_size for p in log_dir.glob("attempt-1.out*")
                  if not p.name.endswith(".dropped"))
    assert on_disk <= 100_000
    assert out.read_bytes().endswith(b"end\n")


def test_a_job_runs_in_its_cwd_with_its_env_and_identity_variables(tmp_path: Path) -> None:
    ledger = Ledger(MemoryStorage())
    work = tmp_path / "wd"
    work.mkdir()
    add(ledger, "e", 'echo "$PWD|$GREETING|$QUEUECTL_JOB_ID|$QUEUECTL_ATTEMPT|$QUEUECTL_QUEUE"',
        cwd=str(work), env={"GREETING": "hej"}, queue="q1")
    make_worker(ledger, tmp_path).run_once()
    out = attempt_path(job_log_dir(tmp_path / "logs", "e"), 1, "out").read_text()
    assert out == f"{work}|hej|e|1|q1\n"
