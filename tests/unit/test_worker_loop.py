"""The worker loop (``queuectl_core.worker.loop``): claim, run, record,
against the in-memory store (through the Ledger) and the real shell
executor. Outcomes and their events, a lost claim, a graceful stop, storage
outages, and a busy worker's one storage call per job (a result recorded
together with the next claim)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from queuectl_core.builtin import ExponentialBackoff
from queuectl_core.errors import TransientStorageError
from queuectl_core.executor import Execution, Prepared
from queuectl_core.joblogs import job_log_dir
from queuectl_core.ledger import Ledger
from queuectl_core.models import (
    Change,
    Claim,
    ExecResult,
    Job,
    JobState,
    Outcome,
)
from queuectl_core.plugins import Plugins, build_plugins
from queuectl_core.settings import Settings
from queuectl_core.testing import MemoryStorage
from queuectl_core.timeutil import now_ms
from queuectl_core.worker.loop import Worker
from queuectl_shell.executor import ShellExecutor
from tests.unit import worker_harness as harness
from tests.unit.worker_harness import Recorder, add, make_worker, recording_plugins


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def plugins(recorder: Recorder) -> Plugins:
    return recording_plugins(recorder)


def memory() -> Ledger:
    return Ledger(MemoryStorage())


# ------------------------------------------------------------------ one job

def test_a_success_is_recorded_with_its_output_on_disk(tmp_path: Path, plugins: Plugins,
                                                       recorder: Recorder) -> None:
    ledger = memory()
    add(ledger, "ok", "echo hello; echo oops >&2")
    worker = make_worker(ledger, tmp_path, plugins=plugins)
    assert worker.run_once()
    job = ledger.get("ok")
    assert job is not None and job.state is JobState.COMPLETED and job.attempts == 1
    assert job.claim_token is None and job.lease_expires_at is None
    out = job_log_dir(tmp_path / "logs", "ok") / "attempt-1.out"
    assert out.read_text() == "hello\n"
    assert recorder.events == [("claimed", "ok"), ("completed", "ok")]


def test_a_failure_is_retried_after_its_backoff_then_dies(tmp_path: Path, plugins: Plugins,
                                                          recorder: Recorder) -> None:
    ledger = memory()
    add(ledger, "bad", "echo broken >&2; exit 4", max_retries=1)
    worker = make_worker(ledger, tmp_path, plugins=plugins)
    before = now_ms()
    worker.run_once()
    job = ledger.get("bad")
    assert job is not None and job.state is JobState.FAILED and job.exit_code == 4
    assert job.last_error == "broken"
    assert before + 2000 <= job.run_at <= now_ms() + 2000  # 2 ** 1 seconds
    assert not worker.run_once(), "not due yet"
    # Make it due without waiting, through the store's own seam.
    [moved] = ledger.store.apply([Change("bad", {"state": JobState.FAILED},
                                         fields={"run_at": now_ms()})])
    assert moved is not None
    worker.run_once()
    job = ledger.get("bad")
    assert job is not None and job.state is JobState.DEAD and job.attempts == 2
    assert recorder.dead == ["bad"]
    assert ("dead", "bad") in recorder.events


def test_an_unknown_command_fails_with_a_clear_error(tmp_path: Path, plugins: Plugins) -> None:
    ledger = memory()
    add(ledger, "nf", "definitely_not_a_command_qq", max_retries=0)
    make_worker(ledger, tmp_path, plugins=plugins).run_once()
    job = ledger.get("nf")
    assert job is not None and job.state is JobState.DEAD and job.exit_code == 127
    assert job.last_error is not None and "not found" in job.last_error


class StealingLedger(Ledger):
    """Another worker takes the job back (its lease expired) just before
    each renewal."""

    def renew(self, claim: Claim, now: int, lease_ms: int) -> Job | None:
        self.recover_expired(now, worker_id=claim.worker_id)
        return super().renew(claim, now, lease_ms)


def test_a_lost_claim_kills_the_command(tmp_path: Path, plugins: Plugins) -> None:
    """If the lease is taken away (recovered by another worker), the worker
    must stop its copy of the command instead of finishing it."""
    ledger = StealingLedger(MemoryStorage())
    marker = tmp_path / "finished"
    add(ledger, "long", f"sleep 3; touch {marker}")
    worker = make_worker(ledger, tmp_path, plugins=plugins, settings=Settings(worker_idle_delay=10,
                                                             lease_seconds=3))
    started = now_ms()
    worker.run_once()
    # The command would touch the marker 3 s after it started: watch past
    # that moment (a negative can only be checked by waiting for it).
    while now_ms() - started < 4000:
        assert not marker.exists(), "the command ran to the end instead of being killed"
        time.sleep(0.05)
    job = ledger.get("long")
    history = ledger.attempts("long")
    assert job is not None and job.state is JobState.FAILED, job
    assert [a.outcome for a in history] == ["lost"], history


def test_a_graceful_stop_request_ends_the_run_before_any_claim(tmp_path: Path,
                                                               plugins: Plugins) -> None:
    ledger = memory()
    add(ledger, "a", "true")
    worker = make_worker(ledger, tmp_path, plugins=plugins)
    worker.stop.request()
    worker.run()
    job = ledger.get("a")
    assert job is not None and job.state is JobState.PENDING, "nothing claimed after stop"
    assert ledger.list_workers() == [], "worker unregistered on exit"


def test_a_running_worker_is_registered_with_what_it_runs(tmp_path: Path,
                                                          plugins: Plugins) -> None:
    """Each heartbeat stores the worker's own record again, with the job it
    runs and its command's process group."""
    ledger = memory()
    add(ledger, "a", "sleep 0.2")
    worker = make_worker(ledger, tmp_path, plugins=plugins)
    seen: list[tuple[str | None, int | None]] = []
    start = worker.start

    def start_then_beat(claim: Claim, prepared: Prepared | None = None
                        ) -> tuple[Execution | None, ExecResult | None]:
        execution, result = start(claim, prepared)
        worker.housekeeping(now_ms(), claim, execution)
        [record] = ledger.list_workers()
        seen.append((record.current_job, record.job_pgid))
        assert execution is not None
        assert record == worker.record.replace(heartbeat_at=record.heartbeat_at)
        assert (record.id, record.pid) == (worker.id, worker.pid)
        return execution, result

    worker.start = start_then_beat  # type: ignore[method-assign]
    worker.run_once()
    assert len(seen) == 1 and seen[0][0] == "a" and seen[0][1] is not None
    worker.housekeeping(now_ms())
    [record] = ledger.list_workers()
    assert (record.current_job, record.job_pgid) == (None, None)


# ------------------------------------------------------------------ outages

class FlakyLedger(Ledger):
    """A store that is 'down' for the next N calls of chosen operations."""

    def __init__(self, store: MemoryStorage | None = None) -> None:
        super().__init__(store or MemoryStorage())
        self.down: dict[str, int] = {}

    def _maybe_fail(self, name: str) -> None:
        if self.down.get(name, 0) > 0:
            self.down[name] -= 1
            raise TransientStorageError(f"{name}: connection refused")

    def record_and_claim(self, outcomes: Sequence[Outcome], now: int, *, worker_id: str,
                         lease_ms: int, queues: Sequence[str] | None = None, limit: int = 1
                         ) -> tuple[list[Job | None], list[Claim]]:
        self._maybe_fail("record")
        return super().record_and_claim(outcomes, now, worker_id=worker_id, lease_ms=lease_ms,
                                        queues=queues, limit=limit)

    def renew(self, claim: Claim, now: int, lease_ms: int) -> Job | None:
        self._maybe_fail("renew")
        return super().renew(claim, now, lease_ms)

    def claim(self, worker_id: str, now: int, lease_ms: int,
              queues: Sequence[str] | None = None) -> Claim | None:
        self._maybe_fail("claim")
        return super().claim(worker_id, now, lease_ms, queues)


def test_a_result_is_kept_until_the_store_is_back_and_tried_every_second(
        tmp_path: Path, plugins: Plugins) -> None:
    ledger = FlakyLedger()
    add(ledger, "a", "echo hi")
    # The store is down when the job finishes. Its lease is not renewed
    # meanwhile, so the result is tried at least every second (not with a
    # backoff that doubles to 10 s: 0.5 + 1 + 2 + 4 s here) to land before
    # the lease ends once the store is back.
    ledger.down["record"] = 4
    worker = make_worker(ledger, tmp_path, plugins=plugins)
    started = time.monotonic()
    worker.run_once()
    assert time.monotonic() - started < 6
    assert ledger.down["record"] == 0
    job = ledger.get("a")
    assert job is not None and job.state is JobState.COMPLETED and job.attempts == 1


def test_a_failed_renewal_does_not_kill_the_command_while_the_lease_holds(
        tmp_path: Path, plugins: Plugins) -> None:
    ledger = FlakyLedger()
    add(ledger, "a", "sleep 4")
    # Down for the whole run: renewals fail from 3 s on, and one that could
    # still end before the lease (9 s) is tried until 6 s; the job ends first.
    ledger.down["renew"] = 100
    worker = make_worker(ledger, tmp_path, plugins=plugins, settings=Settings(worker_idle_delay=10,
                                                             lease_seconds=9))
    worker.run_once()
    assert ledger.down["renew"] < 100, "a renewal was tried"
    job = ledger.get("a")
    assert job is not None and job.state is JobState.COMPLETED


def test_a_worker_that_cannot_renew_stops_the_command_before_the_lease_ends(
        tmp_path: Path, plugins: Plugins) -> None:
    ledger = FlakyLedger()
    pid_file = tmp_path / "pid"
    add(ledger, "a", f"echo $$ > {pid_file}; exec sleep 30")
    ledger.down["renew"] = 100
    worker = make_worker(ledger, tmp_path, plugins=plugins, settings=Settings(worker_idle_delay=10,
                                                             lease_seconds=3))
    started = now_ms()
    worker.run_once()
    took = now_ms() - started
    job = ledger.get("a")
    assert job is not None and job.lease_expires_at is not None
    assert now_ms() < job.lease_expires_at, "the command was stopped before its lease ended"
    assert took < 3000, took
    pid = int(pid_file.read_text())
    assert not Path(f"/proc/{pid}").exists(), "the command was killed and reaped"
    assert job.state is JobState.PROCESSING, "nothing recorded: the store is unreachable"


def test_the_worker_loop_rides_out_an_outage(tmp_path: Path, plugins: Plugins) -> None:
    ledger = FlakyLedger()
    add(ledger, "a", "true")
    ledger.down["claim"] = 2
    worker = make_worker(ledger, tmp_path, plugins=plugins)
    record = ledger.record_and_claim

    def record_then_stop(outcomes: Sequence[Outcome], now: int, **kwargs: object
                         ) -> tuple[list[Job | None], list[Claim]]:
        done = record(outcomes, now, **kwargs)  # type: ignore[arg-type]
        if outcomes:
            worker.stop.request()
        return done

    ledger.record_and_claim = record_then_stop  # type: ignore[method-assign]
    worker.run()
    assert ledger.down["claim"] == 0
    job = ledger.get("a")
    assert job is not None and job.state is JobState.COMPLETED


def test_an_outage_met_by_the_settings_reload_is_reported_as_one(
        tmp_path: Path, plugins: Plugins, caplog: pytest.LogCaptureFixture) -> None:
    calls = {"n": 0}
    ledger = memory()

    def loader(given: Ledger) -> Settings:
        assert given is ledger, "settings are loaded through the worker's ledger"
        calls["n"] += 1
        if calls["n"] > 1:
            raise TransientStorageError("connection lost")
        return Settings(worker_idle_delay=10)

    worker = Worker(ledger=ledger, executor=ShellExecutor(), policy=ExponentialBackoff(),
                    plugins=plugins, settings_loader=loader, log_root=tmp_path / "logs")
    with caplog.at_level("WARNING", logger="queuectl.worker"):
        worker.refresh_settings(now_ms() + 10_000)
    assert "storage unavailable while reloading settings (connection lost)" in caplog.text
    assert worker.settings.worker_idle_delay == 10, "the last good settings stay"


class ClaimOutage(MemoryStorage):
    """A store whose next ``claim`` calls meet an outage."""

    def __init__(self) -> None:
        super().__init__()
        self.claims_down = 0

    def claim(self, worker_id: str, now: int, lease_ms: int,
              queues: Sequence[str] | None = None, limit: int = 1) -> list[Claim]:
        if self.claims_down > 0:
            self.claims_down -= 1
            raise TransientStorageError("connection refused")
        return super().claim(worker_id, now, lease_ms, queues, limit)


def test_a_result_recorded_before_an_outage_is_kept_without_a_claim() -> None:
    """The seam's default ``apply_and_claim``: the result was recorded when
    the claim met the outage, so it is returned with no claim (retrying the
    call would record it twice)."""
    store = ClaimOutage()
    ledger = Ledger(store)
    add(ledger, "a", "true")
    add(ledger, "b", "true")
    claim = ledger.claim("w", now_ms(), 60_000)
    assert claim is not None
    store.claims_down = 1
    [done], following = ledger.record_and_claim([Outcome(claim, ExecResult(exit_code=0))],
                                                now_ms(), worker_id="w", lease_ms=60_000)
    assert done is not None and done.state is JobState.COMPLETED
    assert following == [], "no claim; a retry of the call would record the result twice"
    job = ledger.get("b")
    assert job is not None and job.state is JobState.PENDING
    store.claims_down = 1
    with pytest.raises(TransientStorageError):  # nothing recorded: the outage is reported
        ledger.record_and_claim([], now_ms(), worker_id="w", lease_ms=60_000)


# ------------------------------------------------------------------ one call per job

class CountingLedger(harness.CountingLedger, FlakyLedger):
    """Counts the calls (``worker_harness.CountingLedger``) of a ledger
    whose store can be down."""


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


def plain_worker(ledger: Ledger, tmp_path: Path, stop_at: str) -> Worker:
    """A worker without the claim-ahead strategy (``claim_ahead=False``)."""
    executor = StopOnStart(stop_at)
    worker = Worker(ledger=ledger, executor=executor, policy=ExponentialBackoff(),
                    plugins=build_plugins(entry_points=False),
                    settings_loader=lambda _: Settings(worker_idle_delay=10),
                    log_root=tmp_path / "logs", claim_ahead=False)
    executor.worker = worker
    return worker


def test_a_busy_worker_records_and_claims_in_one_call(tmp_path: Path) -> None:
    ledger = CountingLedger()
    for job_id in ("a", "b", "c", "d"):
        add(ledger, job_id, "true" if job_id != "b" else "exit 1", max_retries=0)
    worker = plain_worker(ledger, tmp_path, stop_at="c")
    assert worker.ahead is None
    worker.run()
    # a's result claims b, b's claims c; c starts after the stop request, so
    # its result is recorded alone and d is never claimed.
    assert ledger.calls == ["claim", "record [a] +1", "record [b] +1", "record [c] +0"]
    states = {j.id: j.state for j in ledger.list_jobs()}
    assert states == {"a": JobState.COMPLETED, "b": JobState.DEAD, "c": JobState.COMPLETED,
                      "d": JobState.PENDING}
    assert ledger.list_jobs(JobState.PROCESSING) == [], "nothing left claimed"
    assert ledger.list_workers() == []
    assert not (tmp_path / "logs").exists(), "silent jobs leave no output files"


def test_a_stop_requested_between_jobs_claims_nothing_more(tmp_path: Path) -> None:
    ledger = CountingLedger()
    add(ledger, "a", "true")
    add(ledger, "b", "true")
    worker = plain_worker(ledger, tmp_path, stop_at="a")
    worker.run()
    assert ledger.calls == ["claim", "record [a] +0"], "a's result is recorded without claiming b"
    assert [j.state for j in ledger.list_jobs()] == [JobState.COMPLETED, JobState.PENDING]


@pytest.mark.parametrize("claim_ahead", [True, False])
def test_no_chaining_while_plugins_listen_for_events(tmp_path: Path, plugins: Plugins,
                                                     recorder: Recorder,
                                                     claim_ahead: bool) -> None:
    ledger = CountingLedger()
    add(ledger, "a", "true")
    add(ledger, "b", "true")
    worker = make_worker(ledger, tmp_path, plugins=plugins, claim_ahead=claim_ahead)
    worker.chain_claims = True  # as in run()
    assert worker.run_once() and worker.run_once()
    assert ledger.calls == ["claim", "record [a] +0", "claim", "record [b] +0"]
    assert recorder.events == [("claimed", "a"), ("completed", "a"), ("claimed", "b"),
                               ("completed", "b")]
