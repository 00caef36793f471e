"""The worker loop against the in-memory store and the real shell executor."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from queuectl_core import hookimpl
from queuectl_core import worker as worker_module
from queuectl_core.builtin import ExponentialBackoff
from queuectl_core.errors import TransientStorageError
from queuectl_core.executor import Execution
from queuectl_core.joblogs import job_log_dir
from queuectl_core.models import (
    Attempt,
    Claim,
    ExecResult,
    Job,
    JobState,
    NewJob,
    Outcome,
    Settings,
    WorkerInfo,
)
from queuectl_core.plugins import Plugins, build_plugins
from queuectl_core.storage import Storage
from queuectl_core.testing import MemoryStorage
from queuectl_core.timeutil import now_ms
from queuectl_core.worker import Worker
from queuectl_shell.executor import ShellExecutor


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.dead: list[str] = []

    @hookimpl
    def queuectl_job_event(self, event: str, job: Job, attempt: Attempt | None) -> None:
        self.events.append((event, job.id))

    @hookimpl
    def queuectl_job_dead(self, job: Job) -> None:
        self.dead.append(job.id)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def plugins(recorder: Recorder) -> Plugins:
    p = build_plugins(entry_points=False)
    p.register(recorder, "recorder")
    return p


def make_worker(store: Storage, plugins: Plugins, tmp_path: Path,
                settings: Settings | None = None) -> Worker:
    s = settings or Settings(worker_idle_delay=10)
    return Worker(storage=store, executor=ShellExecutor(), policy=ExponentialBackoff(),
                  plugins=plugins, settings_loader=lambda _: s, log_root=tmp_path / "logs")


def add(store: Storage, job_id: str, command: str, max_retries: int = 3) -> None:
    now = now_ms()
    store.enqueue([NewJob(id=job_id, command=command, max_retries=max_retries, run_at=now,
                          created_at=now)])


def test_success_is_recorded_with_output_on_disk(tmp_path: Path, plugins: Plugins,
                                                 recorder: Recorder) -> None:
    store = MemoryStorage()
    add(store, "ok", "echo hello; echo oops >&2")
    worker = make_worker(store, plugins, tmp_path)
    assert worker.run_once()
    job = store.get("ok")
    assert job is not None and job.state is JobState.COMPLETED and job.attempts == 1
    out = job_log_dir(tmp_path / "logs", "ok") / "attempt-1.out"
    assert out.read_text() == "hello\n"
    assert recorder.events == [("claimed", "ok"), ("completed", "ok")]


def test_failure_schedules_backoff_then_dead(tmp_path: Path, plugins: Plugins,
                                             recorder: Recorder) -> None:
    store = MemoryStorage()
    add(store, "bad", "echo broken >&2; exit 4", max_retries=1)
    worker = make_worker(store, plugins, tmp_path)
    before = now_ms()
    worker.run_once()
    job = store.get("bad")
    assert job is not None and job.state is JobState.FAILED and job.exit_code == 4
    assert job.last_error == "broken"
    assert before + 2000 <= job.run_at <= now_ms() + 2000  # 2 ** 1 seconds
    assert not worker.run_once(), "not due yet"
    # Make it due without waiting: the store is ours to edit in a unit test.
    store._jobs["bad"] = job.replace(**{"run_at": now_ms()})
    worker.run_once()
    job = store.get("bad")
    assert job is not None and job.state is JobState.DEAD and job.attempts == 2
    assert recorder.dead == ["bad"]
    assert ("dead", "bad") in recorder.events


def test_unknown_command_fails_with_clear_error(tmp_path: Path, plugins: Plugins) -> None:
    store = MemoryStorage()
    add(store, "nf", "definitely_not_a_command_qq", max_retries=0)
    make_worker(store, plugins, tmp_path).run_once()
    job = store.get("nf")
    assert job is not None and job.state is JobState.DEAD and job.exit_code == 127
    assert job.last_error is not None and "not found" in job.last_error


def test_lost_claim_kills_the_command(tmp_path: Path, plugins: Plugins) -> None:
    """If the lease is taken away (recovered by another worker), the worker
    must stop its copy of the command instead of finishing it."""
    store = MemoryStorage()
    marker = tmp_path / "finished"
    add(store, "long", f"sleep 3; touch {marker}")
    worker = make_worker(store, plugins, tmp_path, Settings(worker_idle_delay=10,
                                                            lease_seconds=3))
    original_renew = store.renew

    def steal(claim, now, lease_ms):  # type: ignore[no-untyped-def]
        store.recover_expired(now, worker_id=claim.worker_id)
        return original_renew(claim, now, lease_ms)

    store.renew = steal  # type: ignore[method-assign]
    started = now_ms()
    worker.run_once()
    # The command would touch the marker 3 s after it started: watch past
    # that moment (a negative can only be checked by waiting for it).
    while now_ms() - started < 4000:
        assert not marker.exists(), "the command ran to the end instead of being killed"
        time.sleep(0.05)
    job = store.get("long")
    assert job is not None and job.state is JobState.FAILED
    assert [a.outcome for a in store.attempts("long")] == ["lost"]


def test_housekeeping_recovers_expired_jobs(tmp_path: Path, plugins: Plugins,
                                            recorder: Recorder) -> None:
    store = MemoryStorage()
    add(store, "orphan", "true", max_retries=0)
    assert store.claim("ghost", now_ms(), 1) is not None  # a 1 ms lease, never renewed
    worker = make_worker(store, plugins, tmp_path)
    worker.housekeeping(now_ms() + 10)
    job = store.get("orphan")
    assert job is not None and job.state is JobState.DEAD  # its only attempt was lost
    assert ("lost", "orphan") in recorder.events and recorder.dead == ["orphan"]


def test_graceful_stop_request_ends_run(tmp_path: Path, plugins: Plugins) -> None:
    store = MemoryStorage()
    add(store, "a", "true")
    worker = make_worker(store, plugins, tmp_path)
    worker.stop.request()
    worker.run()
    job = store.get("a")
    assert job is not None and job.state is JobState.PENDING, "nothing claimed after stop"
    assert store.list_workers() == [], "worker unregistered on exit"


class FlakyStorage(MemoryStorage):
    """A store that is 'down' for the next N calls of chosen methods."""

    def __init__(self) -> None:
        super().__init__()
        self.down: dict[str, int] = {}

    def _maybe_fail(self, name: str) -> None:
        if self.down.get(name, 0) > 0:
            self.down[name] -= 1
            raise TransientStorageError(f"{name}: connection refused")

    def complete(self, claim: Claim, result: ExecResult, now: int) -> Job | None:
        self._maybe_fail("complete")
        return super().complete(claim, result, now)

    def renew(self, claim: Claim, now: int, lease_ms: int) -> bool:
        self._maybe_fail("renew")
        return super().renew(claim, now, lease_ms)

    def claim(self, worker_id: str, now: int, lease_ms: int,
              queues: Sequence[str] | None = None) -> Claim | None:
        self._maybe_fail("claim")
        return super().claim(worker_id, now, lease_ms, queues)


def test_result_is_kept_until_the_store_is_back(tmp_path: Path, plugins: Plugins) -> None:
    store = FlakyStorage()
    add(store, "a", "echo hi")
    store.down["complete"] = 2  # the store is down when the job finishes
    worker = make_worker(store, plugins, tmp_path)
    worker.run_once()
    job = store.get("a")
    assert job is not None and job.state is JobState.COMPLETED and job.attempts == 1


def test_failed_renewal_does_not_kill_the_command(tmp_path: Path, plugins: Plugins) -> None:
    store = FlakyStorage()
    add(store, "a", "sleep 2.2")
    store.down["renew"] = 100  # down for the whole run; the lease (3 s) outlives it
    worker = make_worker(store, plugins, tmp_path, Settings(worker_idle_delay=10,
                                                            lease_seconds=3))
    worker.run_once()
    job = store.get("a")
    assert job is not None and job.state is JobState.COMPLETED


def test_worker_loop_rides_out_an_outage(tmp_path: Path, plugins: Plugins) -> None:
    store = FlakyStorage()
    add(store, "a", "true")
    store.down["claim"] = 2
    worker = make_worker(store, plugins, tmp_path)
    original = store.complete

    def complete_then_stop(claim: Claim, result: ExecResult, now: int) -> Job | None:
        done = original(claim, result, now)
        worker.stop.request()
        return done

    store.complete = complete_then_stop  # type: ignore[method-assign]
    worker.run()
    job = store.get("a")
    assert job is not None and job.state is JobState.COMPLETED


# ------------------------------------------------------------------ record_and_claim

class CountingStorage(FlakyStorage):
    """Counts the calls the worker makes to record results and claim:
    ``record [a b] +2`` is one ``record_and_claim`` of a's and b's results
    that claims up to 2 jobs."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []
        self.outcomes: list[Outcome] = []
        self.inside = False

    def claim(self, worker_id: str, now: int, lease_ms: int,
              queues: Sequence[str] | None = None) -> Claim | None:
        if not self.inside:  # not the default record_and_claim's own call
            self.calls.append("claim")
        return super().claim(worker_id, now, lease_ms, queues)

    def record_and_claim(self, outcomes: Sequence[Outcome], now: int, *, worker_id: str,
                         lease_ms: int, queues: Sequence[str] | None = None, limit: int = 1
                         ) -> tuple[list[Job | None], list[Claim]]:
        ids = " ".join(o.claim.job.id for o in outcomes)
        self.calls.append(f"record [{ids}] +{limit}")
        self.outcomes.extend(outcomes)
        self.inside = True
        try:
            return super().record_and_claim(outcomes, now, worker_id=worker_id,
                                            lease_ms=lease_ms, queues=queues, limit=limit)
        finally:
            self.inside = False

    def release(self, claim: Claim, now: int) -> Job | None:
        self.calls.append(f"release {claim.job.id}")
        return super().release(claim, now)


class NoAheadStorage(CountingStorage):
    """A backend without ``due_count``: the worker never claims ahead."""

    def due_count(self, now: int, queues: Sequence[str] | None = None, limit: int = 1
                  ) -> int | None:
        return None


class StopOnStart(ShellExecutor):
    """Asks its worker to stop (gracefully) when a chosen job starts."""

    def __init__(self, job_id: str) -> None:
        super().__init__()
        self.job_id = job_id
        self.worker: Worker | None = None

    def start(self, job: Job, **kwargs: object) -> Execution:
        if job.id == self.job_id and self.worker is not None:
            self.worker.stop.request()
        return super().start(job, **kwargs)  # type: ignore[arg-type]


def quiet_worker(store: Storage, tmp_path: Path, stop_at: str) -> Worker:
    executor = StopOnStart(stop_at)
    worker = Worker(storage=store, executor=executor, policy=ExponentialBackoff(),
                    plugins=build_plugins(entry_points=False),
                    settings_loader=lambda _: Settings(worker_idle_delay=10),
                    log_root=tmp_path / "logs")
    executor.worker = worker
    return worker


def test_busy_worker_records_and_claims_in_one_call(tmp_path: Path) -> None:
    store = NoAheadStorage()
    for job_id in ("a", "b", "c", "d"):
        add(store, job_id, "true" if job_id != "b" else "exit 1", max_retries=0)
    worker = quiet_worker(store, tmp_path, stop_at="c")
    worker.run()
    # a's result claims b, b's claims c; c starts after the stop request, so
    # its result is recorded alone and d is never claimed.
    assert store.calls == ["claim", "record [a] +1", "record [b] +1", "record [c] +0"]
    states = {j.id: j.state for j in store.list_jobs()}
    assert states == {"a": JobState.COMPLETED, "b": JobState.DEAD, "c": JobState.COMPLETED,
                      "d": JobState.PENDING}
    assert store.list_jobs(JobState.PROCESSING) == [], "nothing left claimed"
    assert store.list_workers() == []
    assert not (tmp_path / "logs").exists(), "silent jobs leave no output files"


def test_stop_requested_between_jobs_claims_nothing_more(tmp_path: Path) -> None:
    store = NoAheadStorage()
    add(store, "a", "true")
    add(store, "b", "true")
    worker = quiet_worker(store, tmp_path, stop_at="a")
    worker.run()
    assert store.calls == ["claim", "record [a] +0"], "a's result is recorded without claiming b"
    assert [j.state for j in store.list_jobs()] == [JobState.COMPLETED, JobState.PENDING]


def test_no_chaining_while_plugins_listen_for_events(tmp_path: Path, plugins: Plugins,
                                                     recorder: Recorder) -> None:
    store = CountingStorage()
    add(store, "a", "true")
    add(store, "b", "true")
    worker = make_worker(store, plugins, tmp_path)
    worker.chain_claims = True  # as in run()
    assert worker.run_once() and worker.run_once()
    assert store.calls == ["claim", "record [a] +0", "claim", "record [b] +0"]
    assert recorder.events == [("claimed", "a"), ("completed", "a"), ("claimed", "b"),
                               ("completed", "b")]


def test_default_finish_and_claim_keeps_the_result_when_the_claim_fails() -> None:
    store = FlakyStorage()
    add(store, "a", "true")
    add(store, "b", "true")
    claim = store.claim("w", now_ms(), 60_000)
    assert claim is not None
    store.down["claim"] = 1
    done, following = store.finish_and_claim(claim, ExecResult(exit_code=0), now_ms(),
                                             completed=True, retry_at=None, worker_id="w",
                                             lease_ms=60_000)
    assert done is not None and done.state is JobState.COMPLETED
    assert following is None, "no claim; a retry of the call would record the result twice"
    job = store.get("b")
    assert job is not None and job.state is JobState.PENDING


# ------------------------------------------------------------------ claiming ahead

class Watched(ShellExecutor):
    """Notes when each command starts (in the store's call list) and calls
    ``on_wait(job_id)`` once, at the first wait of each job."""

    def __init__(self, store: CountingStorage) -> None:
        super().__init__()
        self.store = store
        self.on_wait: dict[str, object] = {}

    def start(self, job: Job, **kwargs: object) -> Execution:
        self.store.calls.append(f"start {job.id}")
        execution = super().start(job, **kwargs)  # type: ignore[arg-type]
        hook = self.on_wait.pop(job.id, None)
        if hook is None:
            return execution
        inner_wait = execution.wait

        def wait(timeout: float) -> ExecResult | None:
            if callable(hook):
                hook()
            execution.wait = inner_wait  # type: ignore[method-assign]
            return inner_wait(timeout)

        execution.wait = wait  # type: ignore[method-assign]
        return execution


def watched_worker(store: CountingStorage, tmp_path: Path) -> tuple[Worker, Watched]:
    """A worker whose pace is fixed at 1 ms per job, so that it claims up to
    AHEAD_BATCH jobs ahead whatever the machine's load (the pace has its own
    test)."""
    executor = Watched(store)
    worker = Worker(storage=store, executor=executor, policy=ExponentialBackoff(),
                    plugins=build_plugins(entry_points=False),
                    settings_loader=lambda _: Settings(worker_idle_delay=10),
                    log_root=tmp_path / "logs")
    worker._pace_ms = 1.0
    worker._note_end = lambda: None  # type: ignore[method-assign]
    return worker, executor


def stop_when_idle(worker: Worker, store: Storage) -> None:
    """Ask the worker to stop once nothing is due (its first idle sleep)."""
    idle = worker._idle

    def idle_then_stop(now: int) -> None:
        worker.stop.request()
        idle(now)

    worker._idle = idle_then_stop  # type: ignore[method-assign]


def test_busy_worker_starts_the_next_command_before_recording(tmp_path: Path) -> None:
    store = CountingStorage()
    for job_id in ("a", "b", "c"):
        add(store, job_id, "true")
    worker, _ = watched_worker(store, tmp_path)
    stop_when_idle(worker, store)
    worker.run()
    # a runs; b and c are claimed ahead while it does (one call); when a
    # ends, b's command starts first and a's result waits; when b ends, c
    # starts, and a's and b's results are recorded together (no claim:
    # nothing more is due). c's result is recorded alone, with a claim for
    # the next job (none); the last claim finds nothing and ends the run.
    assert store.calls == ["claim", "start a", "record [] +2", "start b", "start c",
                           "record [a b] +0", "record [c] +1", "claim"], " ".join(store.calls)
    assert {j.id: (j.state, j.attempts) for j in store.list_jobs()} == {
        j: (JobState.COMPLETED, 1) for j in "abc"}
    assert [a.number for j in "abc" for a in store.attempts(j)] == [1, 1, 1]
    assert store.list_workers() == []


def test_job_claimed_ahead_goes_back_when_the_current_runs_long(tmp_path: Path) -> None:
    store = CountingStorage()
    add(store, "long", "sleep 0.3")
    add(store, "b", "true")
    worker, executor = watched_worker(store, tmp_path)
    seen: list[tuple[JobState, int]] = []

    def b_state() -> None:
        job = store.get("b")
        assert job is not None
        seen.append((job.state, len(store.attempts("b"))))

    executor.on_wait["long"] = b_state
    stop_when_idle(worker, store)
    worker.run()
    assert seen == [(JobState.PROCESSING, 1)], "b was claimed ahead while long ran"
    # After AHEAD_HOLD_MS b went back; long's result then claims it to run
    # at once (not ahead: long ran long).
    assert store.calls == ["claim", "start long", "record [] +1", "release b",
                           "record [long] +1", "start b", "record [b] +1", "claim"
                           ], " ".join(store.calls)
    job = store.get("b")
    assert job is not None and job.state is JobState.COMPLETED and job.attempts == 1
    assert [a.number for a in store.attempts("b")] == [1], "the given-back claim left no trace"


def test_no_claiming_ahead_while_other_workers_could_take_the_job(tmp_path: Path) -> None:
    store = CountingStorage()
    store.register_worker(WorkerInfo(id="other", hostname="h", pid=1, started_at=now_ms(),
                                     heartbeat_at=now_ms()))
    add(store, "a", "true")
    add(store, "b", "true")
    worker, _ = watched_worker(store, tmp_path)
    stop_when_idle(worker, store)
    worker.run()
    # Two workers, one job due besides a: b is left for the other worker.
    assert store.calls[:3] == ["claim", "start a", "record [a] +1"], store.calls


def test_graceful_stop_gives_back_the_job_claimed_ahead(tmp_path: Path) -> None:
    store = CountingStorage()
    add(store, "a", "sleep 0.02")
    add(store, "b", "true")
    worker, executor = watched_worker(store, tmp_path)
    executor.on_wait["a"] = worker.stop.request
    worker.run()
    assert store.calls == ["claim", "start a", "record [] +1", "release b", "record [a] +0"
                           ], store.calls
    a, b = store.get("a"), store.get("b")
    assert a is not None and a.state is JobState.COMPLETED
    assert b is not None and (b.state, b.attempts, b.worker_id) == (JobState.PENDING, 0, None)
    assert store.attempts("b") == []


def test_job_cancelled_while_claimed_ahead_never_starts(tmp_path: Path) -> None:
    store = CountingStorage()
    add(store, "a", "sleep 0.02")
    add(store, "b", "true")
    add(store, "c", "true")
    worker, executor = watched_worker(store, tmp_path)
    executor.on_wait["a"] = lambda: store.cancel("b", now_ms())
    stop_when_idle(worker, store)
    worker.run()
    assert "start b" not in store.calls, store.calls
    b = store.get("b")
    assert b is not None and b.state is JobState.CANCELLED and store.attempts("b") == []
    assert {j.id: j.state for j in store.list_jobs()} == {
        "a": JobState.COMPLETED, "b": JobState.CANCELLED, "c": JobState.COMPLETED}


def test_results_are_recorded_in_batches_with_the_next_claims(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker_module, "AHEAD_BATCH", 2)
    monkeypatch.setattr(worker_module, "RESULT_WAIT_MS", 60_000)
    store = CountingStorage()
    for job_id in "abcdef":
        add(store, job_id, "true")
    worker, _ = watched_worker(store, tmp_path)
    stop_when_idle(worker, store)
    worker.run()
    # At most 2 claimed ahead and 2 results waiting: a batch of two results
    # goes with the claims of the next two jobs, while a command runs.
    assert store.calls == [
        "claim", "start a", "record [] +2", "start b", "start c", "record [a b] +2",
        "start d", "start e", "record [c d] +1", "start f", "record [e] +0", "record [f] +1",
        "claim"], " ".join(store.calls)
    assert {j.id: (j.state, j.attempts) for j in store.list_jobs()} == {
        j: (JobState.COMPLETED, 1) for j in "abcdef"}
    # Each result carries when its command really started and ended.
    for outcome in store.outcomes:
        assert outcome.started_at is not None and outcome.finished_at is not None
        claimed = outcome.claim.job.started_at
        assert claimed is not None and claimed <= outcome.started_at <= outcome.finished_at


def test_results_do_not_wait_longer_than_result_wait_ms(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker_module, "RESULT_WAIT_MS", 0)
    store = CountingStorage()
    for job_id in "abc":
        add(store, job_id, "true")
    worker, _ = watched_worker(store, tmp_path)
    stop_when_idle(worker, store)
    worker.run()
    # Each result is recorded as soon as the next command has started (and
    # one job is held ahead: about RESULT_WAIT_MS of work, at least one).
    assert store.calls == ["claim", "start a", "record [] +1", "start b", "record [a] +1",
                           "start c", "record [b] +0", "record [c] +1", "claim"
                           ], " ".join(store.calls)


def test_a_long_command_has_the_waiting_results_recorded_meanwhile(tmp_path: Path) -> None:
    store = CountingStorage()
    add(store, "a", "true")
    add(store, "long", "sleep 0.3")
    add(store, "c", "true")
    worker, executor = watched_worker(store, tmp_path)
    seen: list[JobState] = []

    def a_state() -> None:
        job = store.get("a")
        assert job is not None
        seen.append(job.state)

    executor.on_wait["long"] = a_state
    stop_when_idle(worker, store)
    worker.run()
    assert seen == [JobState.PROCESSING], "a's result waited when long started"
    # After AHEAD_HOLD_MS of long, a's result is recorded and c goes back.
    assert store.calls == ["claim", "start a", "record [] +2", "start long", "record [a] +0",
                           "release c", "record [long] +1", "start c", "record [c] +1", "claim"
                           ], " ".join(store.calls)
    assert {j.id: (j.state, j.attempts) for j in store.list_jobs()} == {
        j: (JobState.COMPLETED, 1) for j in ("a", "long", "c")}


def test_forced_stop_records_the_waiting_results_first(tmp_path: Path) -> None:
    store = CountingStorage()
    add(store, "a", "true")
    add(store, "long", "sleep 30")
    add(store, "c", "true")
    worker, executor = watched_worker(store, tmp_path)

    def force() -> None:
        worker.stop.request()
        worker.stop.request()

    executor.on_wait["long"] = force
    worker.run()
    a, long, c = store.get("a"), store.get("long"), store.get("c")
    assert a is not None and (a.state, a.attempts) == (JobState.COMPLETED, 1), \
        "a finished: its waiting result is recorded, not taken back"
    assert long is not None and (long.state, long.attempts) == (JobState.PENDING, 0)
    assert c is not None and (c.state, c.attempts) == (JobState.PENDING, 0)
    assert [x.outcome for x in store.attempts("a")] == ["completed"]
    assert store.attempts("c") == []


def test_a_worker_holds_about_result_wait_ms_of_work_ahead(
        tmp_path: Path, plugins: Plugins, monkeypatch: pytest.MonkeyPatch) -> None:
    worker = make_worker(MemoryStorage(), plugins, tmp_path)
    assert worker._ahead_depth() == 1, "pace unknown: one job ahead"
    for pace, depth in [(0.5, 32), (1.5, 32), (2.0, 25), (10.0, 5), (49.0, 1), (400.0, 1)]:
        worker._pace_ms = pace
        assert worker._ahead_depth() == depth, pace
    worker._last_end = 1.0
    worker._idle(now_ms())
    assert worker._last_end is None, "an idle gap is not a job's pace"
    clock = iter([10.0, 10.002, 10.004, 10.104])
    monkeypatch.setattr(worker_module.time, "monotonic", lambda: next(clock))
    worker._pace_ms = None
    worker._last_end = None
    worker._note_end()
    assert worker._pace_ms is None, "one end: no gap yet"
    worker._note_end()
    worker._note_end()
    assert worker._pace_ms == pytest.approx(2.0)
    worker._note_end()  # a slower job moves the average a fifth of the way
    assert worker._pace_ms == pytest.approx(0.8 * 2.0 + 0.2 * 100.0)


def test_an_outage_met_by_the_settings_reload_is_reported_as_one(
        tmp_path: Path, plugins: Plugins, caplog: pytest.LogCaptureFixture) -> None:
    calls = {"n": 0}

    def loader(_: Storage) -> Settings:
        calls["n"] += 1
        if calls["n"] > 1:
            raise TransientStorageError("connection lost")
        return Settings(worker_idle_delay=10)

    worker = Worker(storage=MemoryStorage(), executor=ShellExecutor(),
                    policy=ExponentialBackoff(), plugins=plugins, settings_loader=loader,
                    log_root=tmp_path / "logs")
    with caplog.at_level("WARNING", logger="queuectl.worker"):
        worker._refresh_settings(now_ms() + 10_000)
    assert "storage unavailable while reloading settings (connection lost)" in caplog.text
    assert worker.settings.worker_idle_delay == 10, "the last good settings stay"
