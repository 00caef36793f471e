"""SQLite write transactions: the writers' lock file and the one-transaction
``finish_and_claim``."""

from __future__ import annotations

import fcntl
import os
import stat
from pathlib import Path

import pytest

from queuectl_core.models import ExecResult, JobState, NewJob
from queuectl_sqlite.store import SqliteStorage

T0 = 1_800_000_000_000
LEASE = 10_000


def add(store: SqliteStorage, *ids: str) -> None:
    store.enqueue([NewJob(id=i, command="true", max_retries=3, run_at=T0, created_at=T0)
                   for i in ids])


def test_writers_lock_file_is_private_and_released(tmp_path: Path) -> None:
    store = SqliteStorage(tmp_path / "queue.db")
    try:
        add(store, "a")
        lock = tmp_path / "queue.db-wlock"
        assert stat.S_IMODE(lock.stat().st_mode) == 0o600
        # Not held between transactions: another process could take it now.
        fd = os.open(lock, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
    finally:
        store.close()


def test_a_forked_child_takes_the_lock_on_its_own_descriptor(tmp_path: Path) -> None:
    store = SqliteStorage(tmp_path / "queue.db")
    add(store, "a")
    parent_fd = store._writer_lock()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its descriptor must be a new one, not the parent's copy
        try:
            fd = store._writer_lock()
            os.write(write, b"1" if fd >= 0 and fd != parent_fd else b"0")
        finally:
            os._exit(0)
    os.close(write)
    try:
        assert os.read(read, 1) == b"1"
    finally:
        os.close(read)
        os.waitpid(pid, 0)
        store.close()


def test_finish_and_claim_is_one_transaction(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    store = SqliteStorage(tmp_path / "queue.db")
    try:
        add(store, "a", "b")
        claim = store.claim("w", T0, LEASE)
        assert claim is not None and claim.job.id == "a"

        def broken(*args: object) -> None:
            raise RuntimeError("claim failed")

        monkeypatch.setattr(SqliteStorage, "_claim_in", staticmethod(broken))
        with pytest.raises(RuntimeError):
            store.finish_and_claim(claim, ExecResult(exit_code=0), T0 + 5, completed=True,
                                   retry_at=None, worker_id="w", lease_ms=LEASE)
        # Rolled back as a whole: the result is not recorded either.
        job = store.get("a")
        assert job is not None and job.state is JobState.PROCESSING
        assert [a.outcome for a in store.attempts("a")] == ["running"]
        monkeypatch.undo()
        done, following = store.finish_and_claim(claim, ExecResult(exit_code=0), T0 + 6,
                                                 completed=True, retry_at=None,
                                                 worker_id="w", lease_ms=LEASE)
        assert done is not None and done.state is JobState.COMPLETED
        assert following is not None and following.job.id == "b"
    finally:
        store.close()
