"""Crashes between the steps of a change (a job file written but its line
not, a line written but the files it obsoletes not removed, an import's two
lines) leave the old state or the new one, and real SIGKILLs at random
moments lose no acknowledged change."""

from __future__ import annotations

import json
import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from json_store_helpers import FINISHED, Exported, claim, job_path, journal, journal_ops, raw

from queuectl_core.ledger import Ledger
from queuectl_core.models import Job, JobState
from queuectl_core.testing import MemoryStorage
from queuectl_core.testing.conformance import BOOM, LEASE, OK, T0, new_job
from queuectl_json.files import Files
from queuectl_json.store import JsonStorage

DONE = list(FINISHED)


def index_entries(root: Path) -> dict[str, list[list[Any]]]:
    return {f"{p.parent.name}/{p.stem}": [json.loads(line) for line in p.read_text().splitlines()]
            for p in sorted((root / "index").glob("*/*.jsonl"))}


def job_in(job_id: str, state: JobState = JobState.PENDING, **kw: Any) -> Job:
    fields: dict[str, Any] = {"command": f"echo {job_id}", "max_retries": 3, "run_at": T0,
                              "created_at": T0, "updated_at": T0}
    fields.update(kw)
    return Job(id=job_id, state=state, **fields)


def everything(store: Ledger) -> dict[str, Any]:
    jobs = store.list_jobs()
    return {"jobs": jobs, "attempts": {j.id: store.attempts(j.id) for j in jobs},
            "counts": store.counts(), "settings": store.get_settings(),
            "workers": store.list_workers(), "next_run_at": store.next_run_at()}


def exported() -> Exported:
    """a completed, b dead, c failed, d pending, e cancelled (own queue)."""
    mem = Ledger(MemoryStorage())
    mem.enqueue([new_job(n, max_retries=0 if n == "b" else 3) for n in "abcd"])
    mem.complete(claim(mem), OK, T0 + 1)
    mem.fail(claim(mem), BOOM, T0 + 1, None)
    mem.fail(claim(mem), BOOM, T0 + 1, T0 + 500)
    mem.enqueue([new_job("e", queue="mail.out")])
    mem.cancel("e", T0 + 4)
    return [(j, mem.attempts(j.id)) for j in mem.list_jobs()]


def fork(child: Any, *args: Any) -> int:
    """Run ``child(*args)`` in a forked process; its exit status."""
    pid = os.fork()
    if pid == 0:
        try:
            child(*args)
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    return os.WEXITSTATUS(status)


# ------------------------------------------------------------------ finish, revive

def test_a_job_file_written_but_not_committed_loses_to_the_journal(root: Path) -> None:
    """A crash between writing a finished job's file and the journal line:
    the job is still processing; the file is ignored and later replaced."""
    store = Ledger(JsonStorage(root, compact_bytes=4096))
    store.enqueue([new_job("a"), new_job("b")])
    held = claim(store)
    other = Ledger(JsonStorage(root))
    done = other.complete(claim(other), OK, T0 + 1)
    assert done is not None and done.id == "b"
    orphan = job_path(root, "a")
    orphan.parent.mkdir(exist_ok=True)
    orphan.write_text(job_path(root, "b").read_text().replace('"id":"b"', '"id":"a"'))
    for s in (store, Ledger(JsonStorage(root))):
        assert s.get("a").state is JobState.PROCESSING  # type: ignore[union-attr]
        assert [j.id for j in s.list_jobs(JobState.COMPLETED)] == ["b"]
        assert [(j.id, j.state) for j in s.list_jobs()] == [
            ("a", JobState.PROCESSING), ("b", JobState.COMPLETED)]
        assert s.counts()[JobState.COMPLETED] == 1
    assert store.complete(held, OK, T0 + 2) is not None
    assert json.loads(orphan.read_text())["finished_at"] == T0 + 2
    other.close()
    store.close()


def test_a_crash_before_a_revived_jobs_file_is_removed_is_harmless(root: Path) -> None:
    store = Ledger(JsonStorage(root))
    store.enqueue([new_job("a", max_retries=0)])
    store.fail(claim(store), BOOM, T0 + 1, None)
    path = job_path(root, "a")
    dead = path.read_bytes()
    store.dlq_retry("a", T0 + 2)
    assert not path.exists()
    path.write_bytes(dead)  # as if the process died before removing it
    fresh = Ledger(JsonStorage(root))
    assert fresh.get("a").state is JobState.PENDING  # type: ignore[union-attr]
    assert [(j.id, j.state) for j in fresh.list_jobs()] == [("a", JobState.PENDING)]
    assert fresh.list_jobs(JobState.DEAD) == [] and fresh.counts()[JobState.DEAD] == 0
    fresh.close()
    store.close()


# ------------------------------------------------------------------ imports

def _import_then_die(root: Path, records: Exported, files_before_death: int) -> None:
    """Import, and die (like a SIGKILL: no cleanup) after writing some of the
    finished jobs' files, before the ``imported`` line."""
    store = JsonStorage(root, compact_bytes=1 << 30)
    files = store._files
    real = files.atomic_write
    written = 0

    def dying_write(path: Path, data: bytes, *, sync_dir: bool = True) -> None:
        nonlocal written
        if written == files_before_death:
            os._exit(9)
        real(path, data, sync_dir=sync_dir)
        written += 1

    files.atomic_write = dying_write  # type: ignore[method-assign]
    Ledger(store).import_jobs(records)
    os._exit(0)  # not reached


@pytest.mark.parametrize("files_before_death", [0, 1])
def test_a_crash_between_an_import_and_its_files_loses_nothing(root: Path,
                                                                files_before_death: int) -> None:
    records = exported()
    store = Ledger(JsonStorage(root, compact_bytes=1 << 30))
    store.enqueue([new_job("old")])
    viewer = Ledger(JsonStorage(root, compact_bytes=1 << 30))  # opened before the import
    assert fork(_import_then_die, root, records, files_before_death) == 9
    lines = journal(root).read_text().splitlines()
    assert [op["op"] for op in json.loads(lines[-1])["ops"]] == ["import"]
    finished = [j.id for j, _ in records if j.state in FINISHED]
    assert sum(job_path(root, i).exists() for i in finished) == files_before_death
    # Every imported job is visible: to an instance that was open, to a new
    # one, and after compaction (which writes the missing files first).
    fresh = Ledger(JsonStorage(root, compact_bytes=1 << 30))
    for s in (viewer, fresh):
        assert [s.get(j.id) for j, _ in records] == [j for j, _ in records]
        assert set(raw(s)._state.unwritten) == set(finished)
    before = everything(fresh)
    assert everything(viewer) == before
    raw(viewer).compact()
    assert raw(viewer)._state.unwritten == {}
    assert all(job_path(root, i).exists() for i in finished)
    assert not (root / "journal-1.jsonl").exists()
    snap = json.loads((root / "snapshot.json").read_text())
    assert snap["finished"] == {
        "default": {"completed": 1, "dead": 1, "cancelled": 0, "skipped": 0},
        "mail.out": {"completed": 0, "dead": 0, "cancelled": 1, "skipped": 0}}
    assert sorted(j["id"] for j in snap["jobs"]) == ["c", "d", "old"]
    for s in (viewer, fresh, store):
        assert everything(s) == before
    reopened = Ledger(JsonStorage(root))
    assert everything(reopened) == before and raw(reopened)._state.unwritten == {}
    for s in (viewer, fresh, store, reopened):
        s.close()


def test_files_an_import_could_not_write_are_written_by_the_next_insert(
        root: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Writing the files fails after the ``import`` line is committed: the
    import stands (it is reported as done), and its files come later."""
    records = exported()
    store = Ledger(JsonStorage(root, compact_bytes=1 << 30))
    real = Files.atomic_write

    def failing(self: Files, path: Path, data: bytes, *, sync_dir: bool = True) -> None:
        if path.parent.parent.name == "jobs":
            raise OSError(28, "No space left on device")
        real(self, path, data, sync_dir=sync_dir)

    monkeypatch.setattr(Files, "atomic_write", failing)
    store.import_jobs(records)
    assert "writing their files failed" in caplog.text
    other = Ledger(JsonStorage(root, compact_bytes=1 << 30))
    for s in (store, other):
        assert [s.get(j.id) for j, _ in records] == [j for j, _ in records]
    assert not list((root / "jobs").rglob("*.json"))
    # A dead job that only exists in the journal goes back to the queue.
    assert other.dlq_retry("b", T0 + 5).state is JobState.PENDING
    assert store.counts()[JobState.DEAD] == 0
    assert store.get("b").state is JobState.PENDING  # type: ignore[union-attr]
    monkeypatch.undo()
    store.enqueue([new_job("later")])
    assert raw(store)._state.unwritten == {} and other.get("a") is not None
    assert raw(other)._state.unwritten == {}, "the 'imported' line reached the other instance"
    files = sorted(json.loads(p.read_text())["id"] for p in (root / "jobs").rglob("*.json"))
    assert files == ["a", "e"], "no file for the revived job"
    fresh = Ledger(JsonStorage(root))
    assert fresh.list_jobs(JobState.DEAD) == []
    assert fresh.get("b").state is JobState.PENDING  # type: ignore[union-attr]
    assert fresh.counts() == store.counts() == other.counts()
    for s in (store, other, fresh):
        s.close()


def test_a_torn_import_line_imports_nothing(root: Path) -> None:
    """The ``import`` line is the commit point: cut short, none of it counts."""
    store = Ledger(JsonStorage(root, compact_bytes=1 << 30))
    store.enqueue([new_job("old")])
    store.import_jobs(exported())
    lines = journal(root).read_bytes().splitlines(keepends=True)
    journal(root).write_bytes(b"".join(lines[:-2]) + lines[-2][:-1])  # no newline
    for job, _ in exported():
        if job.state in FINISHED:
            job_path(root, job.id).unlink()  # files come only after the line
    fresh = Ledger(JsonStorage(root))
    assert [j.id for j in fresh.list_jobs()] == ["old"]
    assert fresh.counts()[JobState.COMPLETED] == 0 and fresh.get("a") is None
    fresh.import_jobs(exported())  # and the ids are free again
    assert [j.id for j in fresh.list_jobs()] == ["old", "a", "b", "c", "d", "e"]
    fresh.close()
    store.close()


# ------------------------------------------------------------------ purges

def _purge_then_die(root: Path, step: str) -> None:
    """Purge every finished job and die (no cleanup, like a SIGKILL) at
    ``step``, after the purge line is committed."""
    store = JsonStorage(root, compact_bytes=1 << 30)

    def die(*args: Any, **kwargs: Any) -> None:
        os._exit(9)

    if step == "files":
        store._files.remove_finished = die  # type: ignore[method-assign]
    else:
        store._index.drop_jobs = die  # type: ignore[method-assign]
    Ledger(store).purge(states=[JobState.COMPLETED, JobState.CANCELLED])
    os._exit(0)  # not reached


@pytest.mark.parametrize("step", ["files", "index"])
def test_a_crash_after_the_purge_line_still_purges(root: Path, step: str) -> None:
    store = Ledger(JsonStorage(root, compact_bytes=1 << 30))
    store.enqueue([new_job(i) for i in ("a", "b", "c", "keep", "x")])
    for _ in range(3):
        store.complete(claim(store), OK, T0 + 1)
    raw(store).compact()  # a, b, c are in the index files
    store.cancel("x", T0 + 2)  # x is only in the journal so far
    viewer = Ledger(JsonStorage(root, compact_bytes=1 << 30))
    assert fork(_purge_then_die, root, step) == 9, "the child died after committing"
    assert [op["op"] for op in journal_ops(root)][-1] == "purge"
    gone = ["a", "b", "c", "x"]
    assert all(job_path(root, i).exists() for i in gone) == (step == "files")
    fresh = Ledger(JsonStorage(root, compact_bytes=1 << 30))
    for s in (viewer, fresh):
        assert [j.id for j in s.list_jobs()] == ["keep"]
        assert s.list_jobs(JobState.COMPLETED) == [] and s.get("a") is None
        assert s.attempts("a") == [] and s.counts()[JobState.COMPLETED] == 0
        assert s.purge(states=DONE) == []
    fresh.enqueue([new_job("b", command="again")])  # a purged id is free
    assert viewer.get("b").state is JobState.PENDING  # type: ignore[union-attr]
    raw(viewer).compact()
    assert [i for i in gone if job_path(root, i).exists()] == (["b"] if step == "files" else [])
    assert index_entries(root) == {}
    again = Ledger(JsonStorage(root))
    assert [(j.id, j.state) for j in again.list_jobs()] == [("keep", JobState.PENDING),
                                                            ("b", JobState.PENDING)]
    done = again.complete(claim(again), OK, T0 + 5)
    assert done is not None and done.id == "keep"
    assert again.complete(claim(again), OK, T0 + 6) is not None
    assert json.loads(job_path(root, "b").read_text())["command"] == "again"
    assert again.purge(states=DONE) == ["keep", "b"]
    for s in (store, viewer, fresh, again):
        s.close()


# ------------------------------------------------------------------ SIGKILL

def _crash_child(root: Path, prefix: str, ack_fd: int, seed: int) -> None:
    """Work until killed; report each acknowledged change on ``ack_fd``."""
    rng = random.Random(seed)
    store = Ledger(JsonStorage(root, fsync=rng.random() < 0.5, compact_bytes=4096))
    n = 0
    while True:
        n += 1
        job_id = f"{prefix}-{n}"
        store.enqueue([new_job(job_id, max_retries=0, command="x" * rng.randrange(0, 3000))])
        os.write(ack_fd, f"E {job_id}\n".encode())
        if rng.random() < 0.2:
            batch = [job_in(f"{job_id}-i{k}", state, max_retries=0,
                            command="y" * rng.randrange(0, 3000))
                     for k, state in enumerate((JobState.COMPLETED, JobState.DEAD,
                                                JobState.PENDING, JobState.COMPLETED))]
            os.write(ack_fd, f"B {','.join(j.id for j in batch)}\n".encode())
            store.import_jobs([(j, []) for j in batch])
            os.write(ack_fd, f"I {','.join(j.id for j in batch)}\n".encode())
        if rng.random() < 0.1:
            os.write(ack_fd, f"X {job_id}\n".encode())  # about to cancel it
            store.cancel(job_id, T0 + 1)
            os.write(ack_fd, f"K {job_id}\n".encode())
        held = store.claim(prefix, T0, LEASE)
        if held is not None and rng.random() < 0.8:
            if rng.random() < 0.15:
                # Finished long ago: what the sweeps below may purge.
                os.write(ack_fd, f"A {held.job.id}\n".encode())
                store.complete(held, OK, T0 - 1000)
                os.write(ack_fd, f"O {held.job.id}\n".encode())
            elif rng.random() < 0.7:
                store.complete(held, OK, T0 + 1)
                os.write(ack_fd, f"C {held.job.id}\n".encode())
                if rng.random() < 0.2:
                    os.write(ack_fd, f"P {held.job.id}\n".encode())  # about to purge it
                    store.purge(states=[JobState.COMPLETED], ids=[held.job.id])
                    os.write(ack_fd, f"Q {held.job.id}\n".encode())
            else:
                store.fail(held, BOOM, T0 + 1, None)
                os.write(ack_fd, f"D {held.job.id}\n".encode())
                if rng.random() < 0.5:
                    os.write(ack_fd, f"T {held.job.id}\n".encode())  # about to retry it
                    store.dlq_retry(held.job.id, T0 + 2)
                    os.write(ack_fd, f"R {held.job.id}\n".encode())
        if rng.random() < 0.1:
            gone = store.purge(states=[JobState.COMPLETED, JobState.CANCELLED],
                               finished_before=T0 - 500, limit=rng.choice([1, 3, 100]))
            if gone:
                os.write(ack_fd, f"G {','.join(gone)}\n".encode())


def test_sigkill_at_random_moments_loses_no_acknowledged_change(tmp_path: Path) -> None:
    root = tmp_path / "store"
    JsonStorage(root).close()
    rng = random.Random(1234)
    expected: dict[str, set[str]] = {}  # job id -> the states it may be in ("gone": purged)
    batches: dict[str, bool] = {}  # imports begun -> acknowledged
    rounds = 30
    for i in range(rounds):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child
            os.close(r)
            try:
                _crash_child(root, f"r{i}", w, rng.randrange(1 << 30))
            finally:
                os._exit(0)
        os.close(w)
        time.sleep(rng.uniform(0.01, 0.15))
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status), "the child was killed, it did not fail on its own"
        with os.fdopen(r, "rb") as fh:
            acks = fh.read().decode()
        for line in acks.splitlines(keepends=True):
            if line.endswith("\n"):  # a half-written ack was never made
                kind, job_id = line.split()
                if kind in "BI":
                    batches[job_id] = batches.get(job_id, False) or kind == "I"
                    continue
                if kind == "G":  # purged by a sweep
                    for gone in job_id.split(","):
                        assert expected.get(gone, {"gone"}) >= {"gone"}, gone
                        expected[gone] = {"gone"}
                    continue
                # Completed, dead and cancelled are final unless a retry or
                # a purge was started ("T", "P": it may have been committed
                # even if not acknowledged). Only jobs that finished long
                # ago ("A") may be purged by a sweep. Anything else may
                # since have been run by a later child.
                every = {s.value for s in JobState}
                anything = every - {"cancelled"}
                expected[job_id] = {
                    "E": anything, "X": every, "K": {"cancelled"}, "A": anything | {"gone"},
                    "O": {"completed", "gone"}, "C": {"completed"}, "P": {"completed", "gone"},
                    "Q": {"gone"}, "D": {"dead"}, "T": anything, "R": anything}[kind]
        store = Ledger(JsonStorage(root))  # opens after every crash, whatever it hit
        for job_id, allowed in expected.items():
            job = store.get(job_id)
            state = "gone" if job is None else job.state.value
            assert state in allowed, f"job {job_id} is {state} after round {i}, not {allowed}"
        for batch, acknowledged in batches.items():
            # (A job of the batch may since have been run, and purged.)
            seen = [store.get(i) is not None or "gone" in expected.get(i, ())
                    for i in batch.split(",")]
            assert all(seen) or (not any(seen) and not acknowledged), (batch, seen)
        jobs = store.list_jobs()
        assert len({j.id for j in jobs}) == len(jobs), "no job listed twice"
        assert sum(store.counts().values()) == len(jobs)
        # Give back what the killed child held, so later rounds keep moving.
        store.recover_expired(T0, worker_id=f"r{i}", charge_attempt=False)
        store.close()
    assert len(expected) > rounds, "the children got work done between kills"
    assert any(batches.values()), "some imports were acknowledged"
    assert any(v == {"gone"} for v in expected.values()), "some purges were acknowledged"
    assert any(v == {"cancelled"} for v in expected.values()), "some cancels were acknowledged"
