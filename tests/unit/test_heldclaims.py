"""The held file: claims a worker holds ahead without having started them,
given back uncharged when the worker is found dead (queuectl_core.heldclaims)."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

from queuectl_core.builtin import ExponentialBackoff
from queuectl_core.heldclaims import HeldFile, give_back_unstarted, held_path, read_held
from queuectl_core.models import Claim, ExecResult, JobState, NewJob, Settings, WorkerInfo
from queuectl_core.plugins import build_plugins
from queuectl_core.testing import MemoryStorage
from queuectl_core.timeutil import now_ms
from queuectl_core.worker import Worker, release_dead_worker
from queuectl_shell.executor import ShellExecutor

LEASE = 60_000


def store_with(*ids: str, now: int | None = None) -> MemoryStorage:
    store = MemoryStorage()
    now = now_ms() if now is None else now
    store.enqueue([NewJob(id=i, command="true", max_retries=0, run_at=now, created_at=now)
                   for i in ids])
    return store


def claims(store: MemoryStorage, worker: str, count: int) -> list[Claim]:
    made = [store.claim(worker, now_ms(), LEASE) for _ in range(count)]
    assert all(c is not None for c in made)
    return [c for c in made if c is not None]


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_held_file_lists_exactly_the_last_write(tmp_path: Path) -> None:
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
    held.close()
    assert not held.path.exists(), "a clean exit leaves no held file"
    assert read_held(held.path) == []


def test_unreadable_lines_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "w"
    path.write_text('["t1", "a"]\nnot json\n[1, 2]\n\n["t2", "b"]\n["t3"]\n')
    assert read_held(path) == [("t1", "a"), ("t2", "b")]


def test_give_back_releases_only_what_is_still_held(tmp_path: Path) -> None:
    store = store_with("a", "b", "c", "d")
    a, b, c, _ = claims(store, "gone", 4)
    store.complete(a, ExecResult(exit_code=0), now_ms())
    store.cancel("c", now_ms())
    held = HeldFile(tmp_path, "gone")
    held.write([a, b, c])  # a finished meanwhile: fenced; d was started: not listed
    back = give_back_unstarted(store, tmp_path, "gone", now_ms())
    assert [(j.id, j.state) for j in back] == [("b", JobState.PENDING),
                                               ("c", JobState.CANCELLED)]
    assert store.attempts("b") == [], "no attempt left behind"
    job_b = store.get("b")
    assert job_b is not None and (job_b.attempts, job_b.worker_id) == (0, None)
    job_a, job_d = store.get("a"), store.get("d")
    assert job_a is not None and job_a.state is JobState.COMPLETED
    assert job_d is not None and job_d.state is JobState.PROCESSING and job_d.attempts == 1
    assert not held_path(tmp_path, "gone").exists()
    assert give_back_unstarted(store, None, "gone", now_ms()) == []


def test_supervisor_release_gives_back_uncharged_then_charges_the_rest(tmp_path: Path) -> None:
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
    worker = Worker(storage=store, executor=ShellExecutor(), policy=ExponentialBackoff(),
                    plugins=build_plugins(entry_points=False),
                    settings_loader=lambda _: Settings(), log_root=tmp_path / "logs",
                    held_dir=tmp_path)
    recovered = worker.recover(now_ms())
    assert [j.id for j in recovered] == ["run"]
    ahead_job = store.get("ahead")
    assert ahead_job is not None and (ahead_job.state, ahead_job.attempts) == (
        JobState.PENDING, 0)
    assert store.attempts("ahead") == []
    assert not held_path(tmp_path, dead).exists()
    assert held_path(tmp_path, worker.id).exists(), "the live worker's own held file"
