"""Issue 5 in the worker loop: named queues, timeouts, cancel, per-job retry
policies, automatic retention and output capture, against the in-memory
store and the real shell executor (real processes)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from queuectl_core.builtin import ExponentialBackoff, LinearBackoff
from queuectl_core.joblogs import attempt_path, job_log_dir
from queuectl_core.models import JobState, NewJob, Settings
from queuectl_core.plugins import build_plugins
from queuectl_core.registry import BackoffPolicy
from queuectl_core.storage import Storage
from queuectl_core.testing import MemoryStorage
from queuectl_core.timeutil import now_ms
from queuectl_core.worker import Worker
from queuectl_shell.executor import ShellExecutor


def make_worker(store: Storage, tmp_path: Path, settings: Settings | None = None,
                **kwargs: object) -> Worker:
    s = settings or Settings(worker_idle_delay=10)
    return Worker(storage=store, executor=ShellExecutor(), policy=ExponentialBackoff(),
                  plugins=build_plugins(entry_points=False), settings_loader=lambda _: s,
                  log_root=tmp_path / "logs", **kwargs)  # type: ignore[arg-type]


def add(store: Storage, job_id: str, command: str, max_retries: int = 3,
        **fields: object) -> None:
    now = now_ms()
    store.enqueue([NewJob(id=job_id, command=command, max_retries=max_retries, run_at=now,
                          created_at=now, **fields)])  # type: ignore[arg-type]


def test_worker_serves_only_its_queues(tmp_path: Path) -> None:
    store = MemoryStorage()
    add(store, "mail", "true", queue="mail")
    add(store, "other", "true", queue="default")
    worker = make_worker(store, tmp_path, queues=["mail"])
    assert worker.run_once()
    assert not worker.run_once(), "the default queue is not served"
    assert store.get("mail").state is JobState.COMPLETED  # type: ignore[union-attr]
    assert store.get("other").state is JobState.PENDING  # type: ignore[union-attr]


def test_paused_queue_is_skipped_until_resumed(tmp_path: Path) -> None:
    store = MemoryStorage()
    add(store, "a", "true", queue="q")
    store.set_queue_paused("q", True)
    worker = make_worker(store, tmp_path)
    started = time.monotonic()
    assert not worker.run_once()
    assert time.monotonic() - started < 5, "a paused job must not keep the worker spinning"
    store.set_queue_paused("q", False)
    assert worker.run_once()


def test_timeout_kills_the_whole_group_and_retries(tmp_path: Path) -> None:
    store = MemoryStorage()
    pidfile = tmp_path / "child.pid"
    # A background grandchild that would outlive a naive kill of the shell.
    add(store, "slow", f"sleep 60 & echo $! > {pidfile}; wait", timeout=0.5, max_retries=1)
    worker = make_worker(store, tmp_path)
    started = time.monotonic()
    worker.run_once()
    assert time.monotonic() - started < 10
    job = store.get("slow")
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


def test_job_timeout_setting_applies_to_jobs_without_their_own(tmp_path: Path) -> None:
    store = MemoryStorage()
    add(store, "t", "sleep 30", max_retries=0)
    add(store, "own", "sleep 0.3", max_retries=0, timeout=20.0)
    worker = make_worker(store, tmp_path, Settings(worker_idle_delay=10, job_timeout=0.3))
    worker.run_once()
    worker.run_once()
    t, own = store.get("t"), store.get("own")
    assert t is not None and t.state is JobState.DEAD and "timed out after 0.3 s" in (
        t.last_error or "")
    assert own is not None and own.state is JobState.COMPLETED, "its own timeout wins"


def test_cancel_of_a_running_job_stops_it_at_the_next_renewal(tmp_path: Path) -> None:
    store = MemoryStorage()
    add(store, "c", "sleep 30")
    # lease_seconds=3 -> the worker renews (and checks for a cancel) every second.
    worker = make_worker(store, tmp_path, Settings(worker_idle_delay=10, lease_seconds=3))

    original_renew = store.renew

    def renew_and_cancel(claim, now, lease_ms):  # type: ignore[no-untyped-def]
        ok = original_renew(claim, now, lease_ms)
        if store.get("c").cancel_requested_at is None:  # type: ignore[union-attr]
            store.cancel("c", now)
        return ok

    store.renew = renew_and_cancel  # type: ignore[method-assign]
    started = time.monotonic()
    worker.run_once()
    assert time.monotonic() - started < 10
    job = store.get("c")
    assert job is not None and job.state is JobState.CANCELLED
    [attempt] = store.attempts("c")
    assert attempt.outcome == "cancelled" and "cancelled while running" in (attempt.error or "")


def test_cancel_signalled_from_outside_is_not_retried(tmp_path: Path) -> None:
    """`queuectl cancel` on the worker's machine SIGTERMs the group at once;
    the failure that follows is recorded as cancelled, not retried."""
    store = MemoryStorage()
    add(store, "c", "sleep 30")
    worker = make_worker(store, tmp_path)
    original_start = worker.executor.start

    def start_then_cancel(job, **kwargs):  # type: ignore[no-untyped-def]
        execution = original_start(job, **kwargs)
        store.cancel(job.id, now_ms())
        assert execution.pgid is not None
        os.killpg(execution.pgid, signal.SIGTERM)
        return execution

    worker.executor.start = start_then_cancel  # type: ignore[method-assign]
    worker.run_once()
    job = store.get("c")
    assert job is not None and job.state is JobState.CANCELLED


def test_per_job_retry_policy_and_overrides(tmp_path: Path) -> None:
    store = MemoryStorage()
    add(store, "lin", "exit 1", retry={"policy": "linear", "backoff_base": 7.0})
    add(store, "capped", "exit 1", retry={"max_delay": 1.0, "backoff_base": 100.0})
    add(store, "unknown", "exit 1", retry={"policy": "nope"})
    policies: dict[str, BackoffPolicy] = {"linear": LinearBackoff(),
                                          "exponential": ExponentialBackoff()}

    def resolve(name: str) -> BackoffPolicy:
        return policies[name]

    worker = make_worker(store, tmp_path, policy_resolver=resolve)
    for _ in range(3):
        worker.run_once()
    lin, capped, unknown = (store.get(i) for i in ("lin", "capped", "unknown"))
    assert lin is not None and capped is not None and unknown is not None
    assert lin.run_at - lin.finished_at == 7000  # type: ignore[operator]
    assert capped.run_at - capped.finished_at == 1000  # type: ignore[operator]
    assert unknown.run_at - unknown.finished_at == 2000, "the configured policy"  # type: ignore[operator]


def test_retention_purges_old_finished_jobs_and_their_logs(tmp_path: Path) -> None:
    store = MemoryStorage()
    add(store, "old", "echo old")
    add(store, "dead", "exit 1", max_retries=0)
    worker = make_worker(store, tmp_path, Settings(worker_idle_delay=10, retention_days=1))
    worker.run_once()
    worker.run_once()
    assert job_log_dir(tmp_path / "logs", "old").exists()
    assert worker.apply_retention(now_ms() + 86_400_000 - 60_000) == [], "not old enough"
    worker._retention_at = 0
    assert worker.apply_retention(now_ms() + 86_400_000 + 1000) == ["old"]
    assert store.get("old") is None and store.get("dead") is not None, "the DLQ is kept"
    assert not job_log_dir(tmp_path / "logs", "old").exists()


def test_output_is_capped_and_tails_are_stored(tmp_path: Path) -> None:
    store = MemoryStorage()
    add(store, "big", "head -c 300000 /dev/zero | tr '\\0' x; echo; echo end; echo err >&2")
    worker = make_worker(store, tmp_path, Settings(worker_idle_delay=10,
                                                   output_max_bytes=100_000,
                                                   output_tail_bytes=16))
    worker.run_once()
    [attempt] = store.attempts("big")
    assert attempt.outcome == "completed"
    assert attempt.stdout_tail is not None and attempt.stdout_tail.endswith("end\n")
    assert len(attempt.stdout_tail.encode()) <= 16 and attempt.stderr_tail == "err\n"
    log_dir = job_log_dir(tmp_path / "logs", "big")
    out = attempt_path(log_dir, 1, "out")
    on_disk = sum(p.stat().st_size for p in log_dir.glob("attempt-1.out*")
                  if not p.name.endswith(".dropped"))
    assert on_disk <= 100_000
    assert out.read_bytes().endswith(b"end\n")


def test_job_cwd_env_and_identity_variables(tmp_path: Path) -> None:
    store = MemoryStorage()
    work = tmp_path / "wd"
    work.mkdir()
    add(store, "e", 'echo "$PWD|$GREETING|$QUEUECTL_JOB_ID|$QUEUECTL_ATTEMPT|$QUEUECTL_QUEUE"',
        cwd=str(work), env={"GREETING": "hej"}, queue="q1")
    make_worker(store, tmp_path).run_once()
    out = attempt_path(job_log_dir(tmp_path / "logs", "e"), 1, "out").read_text()
    assert out == f"{work}|hej|e|1|q1\n"


def test_orphaned_command_of_a_dead_worker_is_found_by_its_environment(tmp_path: Path
                                                                         ) -> None:
    """A worker SIGKILLed right after starting a command never recorded its
    process group; releasing its job must still kill the command."""
    import subprocess

    from queuectl_core.worker import kill_orphaned_commands

    store = MemoryStorage()
    add(store, "orphan", "sleep 60")
    claim = store.claim("dead-worker", now_ms(), 60_000)
    assert claim is not None
    env = {**os.environ, "QUEUECTL_JOB_ID": "orphan", "QUEUECTL_ATTEMPT": str(claim.attempt)}
    other = {**os.environ, "QUEUECTL_JOB_ID": "orphan", "QUEUECTL_ATTEMPT": "99"}
    victim = subprocess.Popen(["/bin/sh", "-c", "sleep 60 & wait"], env=env,
                              start_new_session=True)
    bystander = subprocess.Popen(["sleep", "60"], env=other, start_new_session=True)
    try:
        kill_orphaned_commands(store, "dead-worker")
        assert victim.wait(timeout=10) == -signal.SIGKILL
        assert bystander.poll() is None, "another attempt's process is left alone"
    finally:
        for proc in (victim, bystander):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
