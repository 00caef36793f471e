"""SQLite write transactions: the writers' lock file, and results recorded
together with the next claims in one transaction."""

from __future__ import annotations

import fcntl
import os
import stat
from pathlib import Path

import pytest

from queuectl_core.ledger import Ledger
from queuectl_core.models import ExecResult, Job, JobState, Outcome
from queuectl_sqlite.sql import MAX_BATCH_QUEUES
from queuectl_sqlite.store import SqliteStorage

T0 = 1_800_000_000_000
LEASE = 10_000


def add(store: SqliteStorage, *ids: str) -> None:
    Ledger(store).enqueue([Job.new(id=i, command="true", max_retries=3, run_at=T0, created_at=T0)
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


def test_a_result_and_the_next_claim_roll_back_together(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = SqliteStorage(tmp_path / "queue.db")
    ledger = Ledger(store)
    try:
        add(store, "a", "b")
        claim = ledger.claim("w", T0, LEASE)
        assert claim is not None and claim.job.id == "a"

        def broken(*args: object) -> None:
            raise RuntimeError("claim failed")

        monkeypatch.setattr(SqliteStorage, "_claim_in", broken)
        with pytest.raises(RuntimeError):
            ledger.record_and_claim([Outcome(claim, ExecResult(exit_code=0))], T0 + 5,
                                    worker_id="w", lease_ms=LEASE)
        # Rolled back as a whole: the result is not recorded either.
        job = store.get("a")
        assert job is not None and job.state is JobState.PROCESSING
        assert [a.outcome for a in store.attempts("a")] == ["running"]
        monkeypatch.undo()
        [done], [following] = ledger.record_and_claim(
            [Outcome(claim, ExecResult(exit_code=0))], T0 + 6, worker_id="w", lease_ms=LEASE)
        assert done is not None and done.state is JobState.COMPLETED
        assert following.job.id == "b"
    finally:
        store.close()


def test_record_and_claim_is_one_transaction_and_keeps_the_real_times(tmp_path: Path) -> None:
    """A batch of results and claims commits once; each attempt keeps when
    its command really started and ended (jobs claimed ahead start later)."""
    store = SqliteStorage(tmp_path / "queue.db")
    ledger = Ledger(store)
    try:
        add(store, "a", "b", "c", "d")
        a = ledger.claim("w", T0, LEASE)
        b = ledger.claim("w", T0, LEASE)
        assert a is not None and b is not None
        before = store.conn.total_changes
        dones, claims = ledger.record_and_claim(
            [Outcome(a, ExecResult(exit_code=0), finished_at=T0 + 3),
             Outcome(b, ExecResult(exit_code=0), started_at=T0 + 3, finished_at=T0 + 5)],
            T0 + 9, worker_id="w", lease_ms=LEASE, limit=2)
        assert store.conn.in_transaction is False
        # 2 results and 2 claims, 2 rows each, and each of the 4 state changes
        # moves one job between two rows of the maintained counts.
        assert store.conn.total_changes - before == 8 + 4 * 2
        assert [j.state for j in dones if j is not None] == [JobState.COMPLETED] * 2
        assert [c.job.id for c in claims] == ["c", "d"]
        [first], [second] = store.attempts("a"), store.attempts("b")
        assert (first.started_at, first.finished_at) == (T0, T0 + 3)
        assert (second.started_at, second.finished_at) == (T0 + 3, T0 + 5)
        job = store.get("b")
        assert job is not None and (job.started_at, job.finished_at) == (T0 + 3, T0 + 5)
    finally:
        store.close()


@pytest.mark.parametrize("queues", [MAX_BATCH_QUEUES, MAX_BATCH_QUEUES + 1])
def test_a_batch_over_many_open_queues_is_what_single_claims_would_take(
        tmp_path: Path, queues: int) -> None:
    """Up to MAX_BATCH_QUEUES open queues are claimed in one statement, more
    one job at a time: either way the jobs, order and attempt numbers of
    single claims."""

    def filled(path: Path) -> SqliteStorage:
        store = SqliteStorage(path)
        Ledger(store).enqueue([
            Job.new(id=f"q{q}-{i}", command="true", max_retries=1, run_at=T0 - i,
                    created_at=T0, priority=(q * 7 + i) % 5, queue=f"q{q}")
            for q in range(queues) for i in range(3)])
        return store

    batch_store, single_store = filled(tmp_path / "batch.db"), filled(tmp_path / "single.db")
    try:
        batch = batch_store.claim("w", T0, LEASE, None, 10)
        single = [c for _ in range(10) for c in single_store.claim("w", T0, LEASE, None, 1)]
        assert [(c.job.id, c.attempt) for c in batch] == [(c.job.id, c.attempt) for c in single]
        for claim in batch:
            Ledger(batch_store).release(claim, T0)
        assert [j.id for j in batch_store.due(T0, None, 10)] == [c.job.id for c in single]
        assert len(batch) == 10 and len({c.token for c in batch}) == 10
    finally:
        batch_store.close()
        single_store.close()
