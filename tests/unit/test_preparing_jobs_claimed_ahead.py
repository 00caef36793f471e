"""Jobs claimed ahead, made ready while the current command runs
(``Executor.prepare``), and started without reading them again unless a poke
came (docs/semantics.md, "Claiming ahead"). Against the SQLite store
(through the Ledger), the real shell executor and real wake-up sockets."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from queuectl_core.builtin import ExponentialBackoff
from queuectl_core.executor import Execution, Prepared
from queuectl_core.ledger import Ledger
from queuectl_core.models import Claim, ExecResult, Job, JobState
from queuectl_core.plugins import build_plugins
from queuectl_core.settings import Settings
from queuectl_core.timeutil import now_ms
from queuectl_core.wakeup import WakeupListener, notify
from queuectl_core.worker.ahead import ClaimAhead
from queuectl_core.worker.loop import Worker
from queuectl_shell.executor import ShellExecutor
from queuectl_sqlite.store import SqliteStorage


def job(job_id: str, command: str, **extra: Any) -> Job:
    now = now_ms()
    return Job(id=job_id, command=command, state=JobState.PROCESSING, attempts=1,
               max_retries=3, created_at=now, updated_at=now, run_at=now,
               claim_token="t", **extra)


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


# ------------------------------------------------------------------ executor

def test_a_prepared_attempt_runs_as_a_started_one(tmp_path: Path) -> None:
    executor = ShellExecutor()
    spec = job("p1", 'echo "$QUEUECTL_JOB_ID $QUEUECTL_ATTEMPT $X $(pwd)"', env={"X": "x"},
               cwd=str(tmp_path))
    results = []
    for prepare_first in (True, False):
        options: dict[str, Any] = {"attempt": 2, "log_dir": tmp_path / "logs",
                                   "tail_bytes": 200}
        execution = (executor.prepare(spec, **options).start() if prepare_first
                     else executor.start(spec, **options))
        result = execution.wait(10)
        assert result is not None
        results.append(result)
    assert results[0] == results[1]
    assert results[0].ok and results[0].stdout_tail == f"p1 2 x {tmp_path}\n"


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_a_discarded_attempt_leaves_no_descriptor_behind(tmp_path: Path) -> None:
    executor = ShellExecutor()
    executor.start(job("warm", "true"), attempt=1, log_dir=tmp_path).wait(10)  # /dev/null
    before = open_fds()
    prepared = executor.prepare(job("d1", "true"), attempt=1, log_dir=tmp_path)
    assert len(open_fds() - before) == 4  # two pipes, both ends
    prepared.discard()
    prepared.discard()  # twice is harmless
    assert open_fds() == before
    dropped = executor.prepare(job("d2", "true"), attempt=1, log_dir=tmp_path)
    del dropped  # neither started nor discarded
    assert open_fds() == before


def test_a_subclass_that_overrides_start_keeps_it(tmp_path: Path) -> None:
    calls: list[str] = []

    class Wrapped(ShellExecutor):
        def start(self, job: Job, **kwargs: Any) -> Execution:
            calls.append(job.id)
            return super().start(job, **kwargs)

    execution = Wrapped().prepare(job("w1", "true"), attempt=1, log_dir=tmp_path).start()
    assert calls == ["w1"] and execution.wait(10) == ExecResult(exit_code=0)


# ------------------------------------------------------------------ worker

class Recording(ShellExecutor):
    """Notes each preparation and start, and can run something at the first
    wait of a job's command."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []
        self.on_wait: dict[str, Any] = {}

    def _watch(self, job_id: str, execution: Execution) -> Execution:
        self.calls.append(f"start {job_id}")
        hook = self.on_wait.pop(job_id, None)
        if hook is not None:
            inner = execution.wait

            def wait(timeout: float) -> ExecResult | None:
                execution.wait = inner  # type: ignore[method-assign]
                hook()
                return inner(timeout)

            execution.wait = wait  # type: ignore[method-assign]
        return execution

    def prepare(self, job: Job, **kwargs: Any) -> Prepared:
        self.calls.append(f"prepare {job.id}")
        prepared = super().prepare(job, **kwargs)
        start, watch = prepared.start, self._watch
        prepared.start = lambda: watch(job.id, start())  # type: ignore[method-assign]
        return prepared

    def _prepare(self, job: Job, *args: Any) -> Prepared:
        # ShellExecutor.start's own path (a job started without preparation).
        prepared = super()._prepare(job, *args)
        if self.calls[-1:] != [f"prepare {job.id}"]:
            start, watch = prepared.start, self._watch
            prepared.start = lambda: watch(job.id, start())  # type: ignore[method-assign]
        return prepared


class CountingReads(Ledger):
    """Notes every job the worker reads (``get``)."""

    def __init__(self, path: Path) -> None:
        super().__init__(SqliteStorage(path))
        self.gets: list[str] = []

    def get(self, job_id: str) -> Job | None:
        self.gets.append(job_id)
        return super().get(job_id)


def strategy(worker: Worker) -> ClaimAhead:
    assert worker.ahead is not None, "claiming ahead is on by default"
    return worker.ahead


def busy_worker(tmp_path: Path, jobs: dict[str, str], *, wakeup: bool = True
                ) -> tuple[Worker, CountingReads, Recording, WakeupListener | None]:
    home = tmp_path / "home"
    store = CountingReads(home / "queue.db")
    now = now_ms()
    store.enqueue([Job.new(id=i, command=c, max_retries=0, run_at=now, created_at=now)
                   for i, c in jobs.items()])
    listener = WakeupListener(home) if wakeup else None
    executor = Recording()
    worker = Worker(ledger=store, executor=executor, policy=ExponentialBackoff(),
                    plugins=build_plugins(entry_points=False),
                    settings_loader=lambda _: Settings(worker_idle_delay=10),
                    log_root=home / "logs" / "jobs", wakeup=listener)
    ahead = strategy(worker)
    ahead._pace_ms = 1.0  # claim ahead whatever the machine's speed
    ahead._note_end = lambda: None  # type: ignore[method-assign]
    idle = worker._idle

    def idle_then_stop(now: int) -> None:
        worker.stop.request()
        idle(now)

    worker._idle = idle_then_stop  # type: ignore[method-assign]
    return worker, store, executor, listener


def states(store: Ledger) -> dict[str, JobState]:
    return {j.id: j.state for j in store.list_jobs()}


def test_jobs_claimed_ahead_are_prepared_and_start_without_a_read(tmp_path: Path) -> None:
    worker, store, executor, listener = busy_worker(
        tmp_path, {"a": "true", "b": "true", "c": "true"})
    worker.run()
    assert states(store) == dict.fromkeys("abc", JobState.COMPLETED)
    # b is prepared while a runs, c while b runs; neither is read again.
    assert executor.calls == ["start a", "prepare b", "start b", "prepare c", "start c"]
    assert store.gets == []
    assert listener is not None
    listener.close()


def test_a_cancel_that_pokes_keeps_a_prepared_job_from_starting(tmp_path: Path) -> None:
    worker, store, executor, listener = busy_worker(
        tmp_path, {"a": "sleep 0.02", "b": "true", "c": "true"})

    def cancel_b() -> None:  # as `queuectl cancel b` does
        store.cancel("b", now_ms())
        notify(tmp_path / "home", cancel=True)

    executor.on_wait["a"] = cancel_b
    worker.run()
    assert "prepare b" in executor.calls and "start b" not in executor.calls
    assert states(store) == {"a": JobState.COMPLETED, "b": JobState.CANCELLED,
                             "c": JobState.COMPLETED}
    assert store.attempts("b") == []
    assert "b" in store.gets and "c" in store.gets  # the poke came while both were held
    assert listener is not None
    listener.close()


def test_pokes_for_new_work_cost_a_busy_worker_no_reads(tmp_path: Path) -> None:
    """A producer enqueuing while the worker drains pokes it for new work
    after every job: the jobs it holds still start without a read."""
    worker, store, executor, listener = busy_worker(
        tmp_path, {"a": "true", "b": "true", "c": "true", "d": "true"})
    for job_id in "abcd":
        executor.on_wait[job_id] = lambda: notify(tmp_path / "home")
    worker.run()
    assert states(store) == dict.fromkeys("abcd", JobState.COMPLETED)
    assert [c for c in executor.calls if c.startswith("start")] == [
        "start a", "start b", "start c", "start d"]
    assert store.gets == []
    assert listener is not None
    listener.close()


def test_without_a_wakeup_socket_each_job_is_read_before_it_starts(tmp_path: Path) -> None:
    worker, store, executor, _ = busy_worker(
        tmp_path, {"a": "sleep 0.02", "b": "true", "c": "true"}, wakeup=False)
    executor.on_wait["a"] = lambda: store.cancel("b", now_ms())  # no poke
    worker.run()
    assert "start b" not in executor.calls
    assert states(store) == {"a": JobState.COMPLETED, "b": JobState.CANCELLED,
                             "c": JobState.COMPLETED}
    assert set(store.gets) == {"b", "c"}


def test_a_claim_past_half_its_lease_is_read_again(tmp_path: Path) -> None:
    worker, _, _, listener = busy_worker(tmp_path, {})
    now = now_ms()

    def claim(lease_left_ms: int) -> Claim:
        return Claim(job=job("x", "true"), token="t", worker_id=worker.id, attempt=1,
                     lease_expires_at=now + lease_left_ms)

    ahead = strategy(worker)
    assert ahead._unchanged(claim(worker.lease_ms))
    assert not ahead._unchanged(claim(worker.lease_ms // 2 - 1000))
    notify(tmp_path / "home")  # new work: nothing to read again
    assert ahead._unchanged(claim(worker.lease_ms))
    notify(tmp_path / "home", cancel=True)
    ahead.held.append(claim(worker.lease_ms))
    assert not ahead._unchanged(claim(worker.lease_ms))  # poked: read it
    assert ahead._unchanged(claim(worker.lease_ms))  # ... once
    assert listener is not None
    listener.close()
