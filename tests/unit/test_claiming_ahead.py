"""Claiming ahead and batched results (``queuectl_core.worker.ahead``): a
busy worker claims its next jobs while a command runs, starts the next
command before recording the last result, records results in batches with
its next claims, and gives jobs held ahead back when the current command
runs long, when it stops, or when other workers could take them. Against
the in-memory store (through the Ledger) and the real shell executor."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace

import pytest

from queuectl_core.builtin import ExponentialBackoff
from queuectl_core.errors import TransientStorageError
from queuectl_core.executor import Execution
from queuectl_core.ledger import Ledger
from queuectl_core.models import ExecResult, Job, JobState, WorkerInfo
from queuectl_core.plugins import build_plugins
from queuectl_core.settings import Settings
from queuectl_core.testing import MemoryStorage
from queuectl_core.timeutil import now_ms
from queuectl_core.worker import ahead as ahead_module
from queuectl_core.worker.ahead import ClaimAhead
from queuectl_core.worker.loop import Worker
from queuectl_shell.executor import ShellExecutor
from tests.unit.worker_harness import CountingLedger, add


class Watched(ShellExecutor):
    """Notes when each command starts (in the ledger's call list) and calls
    ``on_wait[job_id]()`` once, at the first wait of that job's command."""

    def __init__(self, ledger: CountingLedger) -> None:
        super().__init__()
        self.ledger = ledger
        self.on_wait: dict[str, Callable[[], object]] = {}

    def start(self, job: Job, **kwargs: object) -> Execution:
        self.ledger.calls.append(f"start {job.id}")
        execution = super().start(job, **kwargs)  # type: ignore[arg-type]
        hook = self.on_wait.pop(job.id, None)
        if hook is None:
            return execution
        inner_wait = execution.wait

        def wait(timeout: float) -> ExecResult | None:
            hook()
            execution.wait = inner_wait  # type: ignore[method-assign]
            return inner_wait(timeout)

        execution.wait = wait  # type: ignore[method-assign]
        return execution


def strategy(worker: Worker) -> ClaimAhead:
    assert worker.ahead is not None, "claiming ahead is on by default"
    return worker.ahead


def watched_worker(ledger: CountingLedger, tmp_path: Path) -> tuple[Worker, Watched]:
    """A worker whose pace is fixed at 1 ms per job, so that it claims up to
    AHEAD_BATCH jobs ahead whatever the machine's load (the pace has its own
    test)."""
    executor = Watched(ledger)
    worker = Worker(ledger=ledger, executor=executor, policy=ExponentialBackoff(),
                    plugins=build_plugins(entry_points=False),
                    settings_loader=lambda _: Settings(worker_idle_delay=10),
                    log_root=tmp_path / "logs")
    ahead = strategy(worker)
    ahead._pace_ms = 1.0
    ahead._note_end = lambda: None  # type: ignore[method-assign]
    return worker, executor


def stop_when_idle(worker: Worker) -> None:
    """Ask the worker to stop once nothing is due (its first idle sleep)."""
    idle = worker._idle

    def idle_then_stop(now: int) -> None:
        worker.stop.request()
        idle(now)

    worker._idle = idle_then_stop  # type: ignore[method-assign]


def test_a_busy_worker_starts_the_next_command_before_recording(tmp_path: Path) -> None:
    ledger = CountingLedger()
    for job_id in ("a", "b", "c"):
        add(ledger, job_id, "true")
    worker, _ = watched_worker(ledger, tmp_path)
    stop_when_idle(worker)
    worker.run()
    # a runs; b and c are claimed ahead while it does (one call); when a
    # ends, b's command starts first and a's result waits; when b ends, c
    # starts, and a's and b's results are recorded together (no claim:
    # nothing more is due). c's result is recorded alone, with a claim for
    # the next job (none); the last claim finds nothing and ends the run.
    assert ledger.calls == ["claim", "start a", "record [] +2", "start b", "start c",
                            "record [a b] +0", "record [c] +1", "claim"], " ".join(ledger.calls)
    assert {j.id: (j.state, j.attempts) for j in ledger.list_jobs()} == {
        j: (JobState.COMPLETED, 1) for j in "abc"}
    assert [a.number for j in "abc" for a in ledger.attempts(j)] == [1, 1, 1]
    assert ledger.list_workers() == []


def test_a_job_claimed_ahead_goes_back_when_the_current_runs_long(tmp_path: Path) -> None:
    ledger = CountingLedger()
    add(ledger, "long", "sleep 0.3")
    add(ledger, "b", "true")
    worker, executor = watched_worker(ledger, tmp_path)
    seen: list[tuple[JobState, int]] = []

    def b_state() -> None:
        job = ledger.get("b")
        assert job is not None
        seen.append((job.state, len(ledger.attempts("b"))))

    executor.on_wait["long"] = b_state
    stop_when_idle(worker)
    worker.run()
    assert seen == [(JobState.PROCESSING, 1)], "b was claimed ahead while long ran"
    # After AHEAD_HOLD_MS b went back; long's result then claims it to run
    # at once (not ahead: long ran long).
    assert ledger.calls == ["claim", "start long", "record [] +1", "release b",
                            "record [long] +1", "start b", "record [b] +1", "claim"
                            ], " ".join(ledger.calls)
    job = ledger.get("b")
    assert job is not None and job.state is JobState.COMPLETED and job.attempts == 1
    assert [a.number for a in ledger.attempts("b")] == [1], "the given-back claim left no trace"


def test_no_claiming_ahead_while_other_workers_could_take_the_job(tmp_path: Path) -> None:
    ledger = CountingLedger()
    ledger.register_worker(WorkerInfo(id="other", hostname="h", pid=1, started_at=now_ms(),
                                      heartbeat_at=now_ms()))
    add(ledger, "a", "true")
    add(ledger, "b", "true")
    worker, _ = watched_worker(ledger, tmp_path)
    stop_when_idle(worker)
    worker.run()
    # Two workers, one job due besides a: b is left for the other worker.
    assert ledger.calls[:3] == ["claim", "start a", "record [a] +1"], ledger.calls


def test_a_graceful_stop_gives_back_the_job_claimed_ahead(tmp_path: Path) -> None:
    ledger = CountingLedger()
    add(ledger, "a", "sleep 0.02")
    add(ledger, "b", "true")
    worker, executor = watched_worker(ledger, tmp_path)
    executor.on_wait["a"] = worker.stop.request
    worker.run()
    assert ledger.calls == ["claim", "start a", "record [] +1", "release b", "record [a] +0"
                            ], ledger.calls
    a, b = ledger.get("a"), ledger.get("b")
    assert a is not None and a.state is JobState.COMPLETED
    assert b is not None and (b.state, b.attempts, b.worker_id) == (JobState.PENDING, 0, None)
    assert b.claim_token is None and b.lease_expires_at is None
    assert ledger.attempts("b") == []


def test_a_job_cancelled_while_claimed_ahead_never_starts(tmp_path: Path) -> None:
    ledger = CountingLedger()
    add(ledger, "a", "sleep 0.02")
    add(ledger, "b", "true")
    add(ledger, "c", "true")
    worker, executor = watched_worker(ledger, tmp_path)
    executor.on_wait["a"] = lambda: ledger.cancel("b", now_ms())
    stop_when_idle(worker)
    worker.run()
    assert "start b" not in ledger.calls, ledger.calls
    b = ledger.get("b")
    assert b is not None and b.state is JobState.CANCELLED and ledger.attempts("b") == []
    assert {j.id: j.state for j in ledger.list_jobs()} == {
        "a": JobState.COMPLETED, "b": JobState.CANCELLED, "c": JobState.COMPLETED}


def test_results_are_recorded_in_batches_with_the_next_claims(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ahead_module, "AHEAD_BATCH", 2)
    monkeypatch.setattr(ahead_module, "RESULT_WAIT_MS", 60_000)
    ledger = CountingLedger()
    for job_id in "abcdef":
        add(ledger, job_id, "true")
    worker, _ = watched_worker(ledger, tmp_path)
    stop_when_idle(worker)
    worker.run()
    # At most 2 claimed ahead and 2 results waiting: a batch of two results
    # goes with the claims of the next two jobs, while a command runs.
    assert ledger.calls == [
        "claim", "start a", "record [] +2", "start b", "start c", "record [a b] +2",
        "start d", "start e", "record [c d] +1", "start f", "record [e] +0", "record [f] +1",
        "claim"], " ".join(ledger.calls)
    assert {j.id: (j.state, j.attempts) for j in ledger.list_jobs()} == {
        j: (JobState.COMPLETED, 1) for j in "abcdef"}
    # Each result carries when its command really started and ended.
    for outcome in ledger.outcomes:
        assert outcome.started_at is not None and outcome.finished_at is not None
        claimed = outcome.claim.job.started_at
        assert claimed is not None and claimed <= outcome.started_at <= outcome.finished_at
        [attempt] = ledger.attempts(outcome.claim.job.id)
        assert (attempt.started_at, attempt.finished_at) == (outcome.started_at,
                                                             outcome.finished_at)


def test_results_do_not_wait_longer_than_result_wait_ms(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ahead_module, "RESULT_WAIT_MS", 0)
    ledger = CountingLedger()
    for job_id in "abc":
        add(ledger, job_id, "true")
    worker, _ = watched_worker(ledger, tmp_path)
    stop_when_idle(worker)
    worker.run()
    # Each result is recorded as soon as the next command has started (and
    # one job is held ahead: about RESULT_WAIT_MS of work, at least one).
    assert ledger.calls == ["claim", "start a", "record [] +1", "start b", "record [a] +1",
                            "start c", "record [b] +0", "record [c] +1", "claim"
                            ], " ".join(ledger.calls)


def test_a_long_command_has_the_waiting_results_recorded_meanwhile(tmp_path: Path) -> None:
    # a's result waits RESULT_WAIT_MS (50 ms) for long to start: a machine
    # too busy to start it in time records it first, which is right but
    # not what this test looks at. So it tries again, up to three times.
    for round_ in range(3):
        ledger = CountingLedger()
        add(ledger, "a", "true")
        add(ledger, "long", "sleep 0.3")
        add(ledger, "c", "true")
        worker, executor = watched_worker(ledger, tmp_path / str(round_))
        seen: list[JobState] = []

        def a_state(ledger: CountingLedger = ledger, seen: list[JobState] = seen) -> None:
            job = ledger.get("a")
            assert job is not None
            seen.append(job.state)

        executor.on_wait["long"] = a_state
        stop_when_idle(worker)
        worker.run()
        if seen == [JobState.PROCESSING]:
            break
    assert seen == [JobState.PROCESSING], "a's result waited when long started"
    # After AHEAD_HOLD_MS of long, a's result is recorded and c goes back.
    assert ledger.calls == ["claim", "start a", "record [] +2", "start long", "record [a] +0",
                            "release c", "record [long] +1", "start c", "record [c] +1", "claim"
                            ], " ".join(ledger.calls)
    assert {j.id: (j.state, j.attempts) for j in ledger.list_jobs()} == {
        j: (JobState.COMPLETED, 1) for j in ("a", "long", "c")}


def test_a_forced_stop_records_the_waiting_results_first(tmp_path: Path) -> None:
    ledger = CountingLedger()
    add(ledger, "a", "true")
    add(ledger, "long", "sleep 30")
    add(ledger, "c", "true")
    worker, executor = watched_worker(ledger, tmp_path)

    def force() -> None:
        worker.stop.request()
        worker.stop.request()

    executor.on_wait["long"] = force
    worker.run()
    a, long, c = ledger.get("a"), ledger.get("long"), ledger.get("c")
    assert a is not None and (a.state, a.attempts) == (JobState.COMPLETED, 1), \
        "a finished: its waiting result is recorded, not taken back"
    assert long is not None and (long.state, long.attempts) == (JobState.PENDING, 0)
    assert c is not None and (c.state, c.attempts) == (JobState.PENDING, 0)
    assert [x.outcome for x in ledger.attempts("a")] == ["completed"]
    assert [x.outcome for x in ledger.attempts("long")] == ["interrupted"]
    assert ledger.attempts("c") == []


def test_a_worker_holds_about_result_wait_ms_of_work_ahead(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    worker = Worker(ledger=Ledger(MemoryStorage()), executor=ShellExecutor(),
                    policy=ExponentialBackoff(), plugins=build_plugins(entry_points=False),
                    settings_loader=lambda _: Settings(worker_idle_delay=10),
                    log_root=tmp_path / "logs")
    ahead = strategy(worker)
    assert ahead._depth() == 1, "pace unknown: one job ahead"
    for pace, depth in [(0.5, 32), (1.5, 32), (2.0, 25), (10.0, 5), (49.0, 1), (400.0, 1)]:
        ahead._pace_ms = pace
        assert ahead._depth() == depth, pace
    ahead._last_end = 1.0
    worker._idle(now_ms())
    assert ahead._last_end is None, "an idle gap is not a job's pace"
    clock = iter([10.0, 10.002, 10.004, 10.104])
    monkeypatch.setattr(ahead_module, "time", SimpleNamespace(monotonic=lambda: next(clock)))
    ahead._pace_ms = None
    ahead._last_end = None
    ahead._note_end()
    assert ahead._pace_ms is None, "one end: no gap yet"
    ahead._note_end()
    ahead._note_end()
    assert ahead._pace_ms == pytest.approx(2.0)
    ahead._note_end()  # a slower job moves the average a fifth of the way
    assert ahead._pace_ms == pytest.approx(0.8 * 2.0 + 0.2 * 100.0)


def test_a_plain_worker_never_claims_ahead(tmp_path: Path) -> None:
    """``claim_ahead=False``: the plain loop, one job claimed at a time,
    each result recorded with the next claim."""
    ledger = CountingLedger()
    for job_id in "abc":
        add(ledger, job_id, "true")
    executor = Watched(ledger)
    worker = Worker(ledger=ledger, executor=executor, policy=ExponentialBackoff(),
                    plugins=build_plugins(entry_points=False),
                    settings_loader=lambda _: Settings(worker_idle_delay=10),
                    log_root=tmp_path / "logs", claim_ahead=False)
    assert worker.ahead is None
    stop_when_idle(worker)
    worker.run()
    assert ledger.calls == ["claim", "start a", "record [a] +1", "start b", "record [b] +1",
                            "start c", "record [c] +1", "claim"], " ".join(ledger.calls)
    assert {j.id: j.state for j in ledger.list_jobs()} == dict.fromkeys(
        "abc", JobState.COMPLETED)


def test_no_claiming_ahead_when_the_due_count_meets_an_outage(tmp_path: Path) -> None:
    """The count of due jobs that decides how many to claim ahead is a
    cheap read; if the store is unreachable for it, nothing is claimed
    ahead and the job runs as usual."""

    class NoCount(CountingLedger):
        def due_count(self, now: int, queues: Sequence[str] | None = None,
                      limit: int = 1) -> int:
            raise TransientStorageError("connection refused")

    ledger = NoCount()
    add(ledger, "a", "true")
    add(ledger, "b", "true")
    worker, _ = watched_worker(ledger, tmp_path)
    stop_when_idle(worker)
    worker.run()
    assert ledger.calls == ["claim", "start a", "record [a] +1", "start b", "record [b] +1",
                            "claim"], " ".join(ledger.calls)
