"""The held files: the claims a worker holds ahead without having started
them, and the results it has not recorded yet; given back uncharged and
recorded when the worker is found dead (``queuectl_core.worker.held``)."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from queuectl_core.builtin import ExponentialBackoff
from queuectl_core.ledger import Ledger
from queuectl_core.models import Claim, ExecResult, Job, JobState, Outcome, WorkerInfo
from queuectl_core.plugins import build_plugins
from queuectl_core.settings import Settings
from queuectl_core.testing import MemoryStorage
from queuectl_core.timeutil import now_ms
from queuectl_core.worker.ahead import ClaimAhead
from queuectl_core.worker.held import (
    HeldFile,
    held_path,
    read_held,
    read_results,
    recover_held,
    results_path,
    running_jobs,
)
from queuectl_core.worker.housekeeping import release_dead_worker
from queuectl_core.worker.loop import Worker
from queuectl_shell.executor import ShellExecutor

LEASE = 60_000


def store_with(*ids: str, now: int | None = None) -> Ledger:
    store = Ledger(MemoryStorage())
    now = now_ms() if now is None else now
    store.enqueue([Job.new(id=i, command="true", max_retries=0, run_at=now, created_at=now)
                   for i in ids])
    return store


def claims(store: Ledger, worker: str, count: int) -> list[Claim]:
    made = [store.claim(worker, now_ms(), LEASE) for _ in range(count)]
    assert all(c is not None for c in made)
    return [c for c in made if c is not None]


def worker_on(store: Ledger, tmp_path: Path, held_dir: Path) -> Worker:
    return Worker(ledger=store, executor=ShellExecutor(), policy=ExponentialBackoff(),
                  plugins=build_plugins(entry_points=False),
                  settings_loader=lambda _: Settings(), log_root=tmp_path / "logs",
                  held_dir=held_dir)


def files_of(worker: Worker) -> ClaimAhead:
    assert worker.ahead is not None, "held files belong to the claim-ahead strategy"
    return worker.ahead


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_the_held_file_lists_exactly_the_last_write(tmp_path: Path) -> None:
    store = store_with("a", "b", "c with spaces\nand a newline")
    a, b, c = claims(store, "w", 3)
    held = HeldFile(tmp_path / "held", "host:1:abc")
    held.write([a, b, c])
    assert read_held(held.path) == [(a.token, "a"), (b.token, "b"),
                                    (c.token, "c with spaces\nand a newline")]
    held.write([c])  # shorter: the rest of the old text is blanked out
    assert read_held(held.path) == [(c.token, "c with spaces\nand a newline")]
    held.write([])
    assert read_held(held.path) == []
    assert held.path.stat().st_mode & 0o777 == 0o600
    assert held.results.stat().st_mode & 0o777 == 0o600
    held.add_result(Outcome(a, ExecResult(exit_code=3, error="x" * 10_000), retry_at=9,
                            finished_at=7, started_at=5))
    held.add_result(Outcome(b, ExecResult(exit_code=0)))
    first, second = read_results(held.results)
    assert first == {"token": a.token, "job": "a", "attempt": 1, "exit_code": 3,
                     "signal": None, "error": "x" * 4000, "retry_at": 9, "finished_at": 7,
                     "started_at": 5}
    assert (second["job"], second["exit_code"]) == ("b", 0)
    held.clear_results()
    assert read_results(held.results) == []
    held.close()
    assert not held.path.exists() and not held.results.exists(), "a clean exit leaves none"
    assert read_held(held.path) == [] and read_results(held.results) == []


def test_unreadable_lines_of_held_files_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "w"
    path.write_text('["t1", "a"]\nnot json\n[1, 2]\n\n["t2", "b"]\n["t3"]\n')
    assert read_held(path) == [("t1", "a"), ("t2", "b")]
    path.write_text('{"token": "t", "job": "a"}\n{"token": "t"}\n{"token": "t", "jo')
    assert read_results(path) == [{"token": "t", "job": "a"}], "a torn last line is skipped"


def test_recovery_gives_back_only_what_is_still_held(tmp_path: Path) -> None:
    store = store_with("a", "b", "c", "d")
    a, b, c, _ = claims(store, "gone", 4)
    store.complete(a, ExecResult(exit_code=0), now_ms())
    store.cancel("c", now_ms())
    held = HeldFile(tmp_path, "gone")
    held.write([a, b, c])  # a finished meanwhile: fenced; d was started: not listed
    recorded, back = recover_held(store, tmp_path, "gone", now_ms())
    assert recorded == []
    assert [(j.id, j.state) for j in back] == [("b", JobState.PENDING),
                                               ("c", JobState.CANCELLED)]
    assert store.attempts("b") == [], "no attempt left behind"
    job_b = store.get("b")
    assert job_b is not None and (job_b.attempts, job_b.worker_id) == (0, None)
    job_a, job_d = store.get("a"), store.get("d")
    assert job_a is not None and job_a.state is JobState.COMPLETED
    assert job_d is not None and job_d.state is JobState.PROCESSING and job_d.attempts == 1
    assert not held_path(tmp_path, "gone").exists()
    assert not results_path(tmp_path, "gone").exists()
    assert recover_held(store, None, "gone", now_ms()) == ([], [])


def test_results_not_recorded_are_recorded_once_by_recovery(tmp_path: Path) -> None:
    store = store_with("ok", "bad", "last", "done", "taken")
    ok, bad, last, done, taken = claims(store, "gone", 5)
    store.complete(done, ExecResult(exit_code=0), now_ms())  # committed before the crash
    store.release(taken, now_ms())
    again = store.claim("other", now_ms(), LEASE)  # and another worker has it now
    assert again is not None and again.job.id == "taken"
    held = HeldFile(tmp_path, "gone")
    end = now_ms() - 5
    held.add_result(Outcome(ok, ExecResult(exit_code=0), finished_at=end, started_at=end - 1))
    held.add_result(Outcome(bad, ExecResult(exit_code=2, error="no"), retry_at=None,
                            finished_at=end))
    held.add_result(Outcome(done, ExecResult(exit_code=0), finished_at=end))
    held.add_result(Outcome(taken, ExecResult(exit_code=0), finished_at=end))
    recorded, back = recover_held(store, tmp_path, "gone", now_ms())
    assert [(j.id, j.state) for j in recorded] == [("ok", JobState.COMPLETED),
                                                   ("bad", JobState.DEAD)]
    assert back == []
    [attempt] = store.attempts("ok")
    assert (attempt.outcome, attempt.finished_at) == ("completed", end), "the real end time"
    assert [a.outcome for a in store.attempts("bad")] == ["failed"]
    assert [a.outcome for a in store.attempts("done")] == ["completed"], "recorded once"
    job = store.get("taken")
    assert job is not None and (job.state, job.worker_id) == (JobState.PROCESSING, "other")
    job = store.get("last")
    assert job is not None and job.state is JobState.PROCESSING, "still running: not ours"
    assert last.job.id == "last"
    assert not results_path(tmp_path, "gone").exists()


def test_releasing_a_dead_worker_gives_back_uncharged_then_charges_the_rest(tmp_path: Path) -> None:
    store = store_with("run", "ahead")
    _, ahead = claims(store, "host:1:x", 2)
    HeldFile(tmp_path, "host:1:x").write([ahead])
    record = WorkerInfo(id="host:1:x", hostname="elsewhere", pid=1, started_at=now_ms(),
                        heartbeat_at=now_ms())
    store.register_worker(record)
    plugins = build_plugins(entry_points=False)
    lost = release_dead_worker(store, plugins, record, now_ms(), held_dir=tmp_path)
    assert [j.id for j in lost] == ["run"]
    run_job, ahead_job = store.get("run"), store.get("ahead")
    assert run_job is not None and run_job.state is JobState.DEAD, "max_retries 0, charged"
    assert ahead_job is not None and (ahead_job.state, ahead_job.attempts) == (
        JobState.PENDING, 0), "never started: uncharged"


def test_lease_expiry_recovery_reads_a_dead_local_workers_held_file(tmp_path: Path) -> None:
    start = now_ms() - 10 * LEASE
    store = store_with("run", "ahead", now=start)
    dead = f"{socket.gethostname()}:{dead_pid()}:dead"
    running = store.claim(dead, start, LEASE)
    ahead = store.claim(dead, start, LEASE)
    assert running is not None and ahead is not None
    store.register_worker(WorkerInfo(id=dead, hostname=socket.gethostname(),
                                     pid=int(dead.split(":")[1]), started_at=start,
                                     heartbeat_at=start))
    HeldFile(tmp_path, dead).write([ahead])
    worker = worker_on(store, tmp_path, tmp_path)
    recovered = worker.keeper.recover(now_ms())
    assert [j.id for j in recovered] == ["run"]
    ahead_job = store.get("ahead")
    assert ahead_job is not None and (ahead_job.state, ahead_job.attempts) == (
        JobState.PENDING, 0)
    assert store.attempts("ahead") == []
    assert not held_path(tmp_path, dead).exists()
    assert held_path(tmp_path, worker.id).exists(), "the live worker's own held file"


def test_housekeeping_sweeps_held_files_of_gone_unregistered_workers(tmp_path: Path) -> None:
    """A worker that died with its claim ahead unexpired and its record gone
    (pruned, or taken back elsewhere) is no concern of recover(), which
    looks at expired leases: housekeeping settles its files (the claim
    given back uncharged) and removes them. Files of a worker that is
    registered, still running, or on another machine stay."""
    start = now_ms()
    store = store_with("ahead", "kept", now=start)
    host = socket.gethostname()
    gone = f"{host}:{dead_pid()}:gone"
    registered = f"{host}:{dead_pid()}:reg"
    alive = f"{host}:{os.getpid()}:alive"
    elsewhere = f"other-host:{dead_pid()}:far"
    ahead = store.claim(gone, start, LEASE)
    kept = store.claim(registered, start, LEASE)
    assert ahead is not None and kept is not None
    store.register_worker(WorkerInfo(id=registered, hostname=host,
                                     pid=int(registered.split(":")[1]), started_at=start,
                                     heartbeat_at=start))
    HeldFile(tmp_path, gone).write([ahead])
    HeldFile(tmp_path, registered).write([kept])
    for other in (alive, elsewhere):
        HeldFile(tmp_path, other)
    worker = worker_on(store, tmp_path, tmp_path)
    store.register_worker(WorkerInfo(id=worker.id, hostname=host, pid=os.getpid(),
                                     started_at=start, heartbeat_at=start))
    worker.housekeeping(now_ms())
    ahead_job = store.get("ahead")
    assert ahead_job is not None and (ahead_job.state, ahead_job.attempts) == (
        JobState.PENDING, 0), "given back uncharged"
    assert store.attempts("ahead") == []
    assert not held_path(tmp_path, gone).exists()
    assert not results_path(tmp_path, gone).exists()
    for stays in (registered, alive, elsewhere, worker.id):
        assert held_path(tmp_path, stays).exists(), stays
    kept_job = store.get("kept")
    assert kept_job is not None and kept_job.state is JobState.PROCESSING
    assert worker.keeper.sweep_held(now_ms(), {registered, worker.id}) == [], (
        "nothing left to sweep")


def test_a_worker_that_cannot_write_its_held_files_stops_keeping_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A held file that could not be rewritten might list a claim whose
    command has started: the worker removes both files and goes on without
    them (a crash then charges, as without held files)."""
    store = store_with("a")
    worker = worker_on(store, tmp_path, tmp_path / "held")
    ahead = files_of(worker)
    held = ahead._files
    assert held is not None and held.path.exists() and held.results.exists()

    def broken(*_: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(HeldFile, "write", broken)
    with caplog.at_level("WARNING", logger="queuectl.worker"):
        ahead._note_held()
    assert ahead._files is None
    assert not held.path.exists() and not held.results.exists()
    assert "no longer keeping held files" in caplog.text
    ahead._note_held()  # and nothing more is tried


def test_running_jobs_are_the_claims_neither_held_ahead_nor_finished(tmp_path: Path) -> None:
    store = store_with("run", "ahead", "done", "other", "remote")
    run, ahead, done = claims(store, "host:1:x", 3)
    claims(store, "host:12:y", 1)  # pid 12 is not 1: another worker's
    claims(store, "elsewhere:1:z", 1)  # another machine's pid 1
    held = HeldFile(tmp_path, "host:1:x")
    held.write([ahead])
    held.add_result(Outcome(done, ExecResult(exit_code=0), finished_at=now_ms()))
    assert running_jobs(store, tmp_path, "host", [1]) == ["run"]
    assert running_jobs(store, tmp_path, "host", [1, 12]) == ["run", "other"]
    assert running_jobs(store, tmp_path, "host", []) == []
    assert run.job.id == "run"
