"""SQLite write transactions: the writers' lock file and the one-transaction
``finish_and_claim``."""

from __future__ import annotations

import fcntl
import os
import stat
from pathlib import Path

import pytest

from queuectl_core.models import ExecResult, JobState, NewJob, Outcome
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


def test_record_and_claim_is_one_transaction_and_keeps_the_real_times(tmp_path: Path) -> None:
    """A batch of results and claims commits once; each attempt keeps when
    its command really started and ended (jobs claimed ahead start later)."""
    store = SqliteStorage(tmp_path / "queue.db")
    try:
        add(store, "a", "b", "c", "d")
        a = store.claim("w", T0, LEASE)
        b = store.claim("w", T0, LEASE)
        assert a is not None and b is not None
        before = store.conn.total_changes
        dones, claims = store.record_and_claim(
            [Outcome(a, ExecResult(exit_code=0), finished_at=T0 + 3),
             Outcome(b, ExecResult(exit_code=0), started_at=T0 + 3, finished_at=T0 + 5)],
            T0 + 9, worker_id="w", lease_ms=LEASE, limit=2)
        assert store.conn.in_transaction is False
        assert store.conn.total_changes - before == 8, "2 results and 2 claims, 2 rows each"
        assert [j.state for j in dones if j is not None] == [JobState.COMPLETED] * 2
        assert [c.job.id for c in claims] == ["c", "d"]
        [first], [second] = store.attempts("a"), store.attempts("b")
        assert (first.started_at, first.finished_at) == (T0, T0 + 3)
        assert (second.started_at, second.finished_at) == (T0 + 3, T0 + 5)
        job = store.get("b")
        assert job is not None and (job.started_at, job.finished_at) == (T0 + 3, T0 + 5)
    finally:
        store.close()


def mixed_store(path: Path) -> SqliteStorage:
    """Jobs of two queues, priorities, run_at times and one with a history
    (two attempts, then put back by ``dlq retry``)."""
    store = SqliteStorage(path)
    specs = [("p0-late", 0, T0 - 5, "default"), ("p0-early", 0, T0 - 9, "default"),
             ("p5", 5, T0, "default"), ("p5-later", 5, T0 - 1, "default"),
             ("future", 9, T0 + 1, "default"), ("other", 9, T0, "other"),
             ("retried", 1, T0, "default")]
    store.enqueue([NewJob(id=i, command="true", max_retries=1, run_at=r, created_at=T0,
                          priority=p, queue=q) for i, p, r, q in specs if i != "retried"])
    store.enqueue([NewJob(id="retried", command="false", max_retries=1, run_at=T0 - 100,
                          created_at=T0, priority=99)])
    for _ in range(2):  # its two attempts end it dead; then back to pending
        claim = store.claim("w0", T0 - 100, LEASE, queues=["default"])
        assert claim is not None and claim.job.id == "retried"
        store.fail(claim, ExecResult(exit_code=1, error="no"), T0 - 100,
                   T0 - 100 if claim.attempt == 1 else None)
    store.dlq_retry("retried", T0 - 50)
    store.conn.execute("UPDATE jobs SET priority = 1 WHERE id = 'retried'")
    return store


@pytest.mark.parametrize("queues", [["default"], None])
def test_a_batch_of_claims_is_what_single_claims_would_take(
        tmp_path: Path, queues: list[str] | None) -> None:
    """record_and_claim claims several jobs of one open queue in one
    statement (else one at a time): the same jobs, in the same order and
    with the same attempt numbers as claims made one by one, each with its
    own token."""
    batch_store = mixed_store(tmp_path / "batch.db")
    single_store = mixed_store(tmp_path / "single.db")
    try:
        _, batch = batch_store.record_and_claim([], T0, worker_id="w", lease_ms=LEASE,
                                                queues=queues, limit=5)
        single = [single_store.claim("w", T0, LEASE, queues) for _ in range(5)]
        expected = [c for c in single if c is not None]
        assert [(c.job.id, c.attempt) for c in batch] == [
            (c.job.id, c.attempt) for c in expected]
        order = ["p5-later", "p5", "retried", "p0-early", "p0-late"]
        if queues is None:  # two open queues: "other" (priority 9) comes first
            order = ["other", *order[:4]]
        assert [c.job.id for c in batch] == order
        assert dict((c.job.id, c.attempt) for c in batch)["retried"] == 3
        assert len({c.token for c in batch}) == len(batch)
        for claim in batch:
            job = batch_store.get(claim.job.id)
            assert job is not None and job.state is JobState.PROCESSING
            assert (job.worker_id, job.lease_expires_at) == ("w", T0 + LEASE)
            [running] = [a for a in batch_store.attempts(claim.job.id) if a.outcome == "running"]
            assert running.number == claim.attempt
            assert [tuple(r) for r in batch_store.conn.execute(
                "SELECT job_id, number FROM attempts WHERE claim_token = ?", (claim.token,)
            )] == [(claim.job.id, claim.attempt)]
            done = batch_store.complete(claim, ExecResult(exit_code=0), T0 + 1)
            assert done is not None and done.state is JobState.COMPLETED
        # Nothing else was touched: the future job and the one left stay pending.
        assert batch_store.counts()[JobState.PENDING] == 2
    finally:
        batch_store.close()
        single_store.close()
