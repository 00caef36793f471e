"""What is specific to the JSON store: file layout and permissions, damaged
files, torn journal lines, compaction, several instances sharing a store,
imports (and a crash between their two steps), and real SIGKILLs in the
middle of writes."""

from __future__ import annotations

import fcntl
import json
import os
import random
import signal
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from queuectl_core.errors import DuplicateJobError, InvalidStateError, StorageError
from queuectl_core.models import (
    Attempt,
    AttemptOutcome,
    ExecResult,
    Job,
    JobState,
    NewJob,
    WorkerInfo,
)
from queuectl_core.registry import PluginContext
from queuectl_core.testing import MemoryStorage
from queuectl_json import queuectl_storage_backends
from queuectl_json.options import JsonOptions
from queuectl_json.store import FORMAT_VERSION, JsonStorage, job_file_name

T0 = 1_800_000_000_000
LEASE = 10_000
FINISHED = (JobState.COMPLETED, JobState.DEAD, JobState.CANCELLED)
OK = ExecResult(exit_code=0)
BOOM = ExecResult(exit_code=3, error="boom")


def new_job(job_id: str, **kw: Any) -> NewJob:
    fields: dict[str, Any] = {"command": f"echo {job_id}", "max_retries": 3, "run_at": T0,
                              "created_at": T0}
    fields.update(kw)
    return NewJob(id=job_id, **fields)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def store(root: Path) -> Iterator[JsonStorage]:
    s = JsonStorage(root, compact_bytes=4096)
    yield s
    s.close()


@pytest.fixture
def roomy(root: Path) -> Iterator[JsonStorage]:
    """A store that compacts only when told (its journal can be inspected)."""
    s = JsonStorage(root, compact_bytes=1 << 30)
    yield s
    s.close()


def journal(root: Path) -> Path:
    [path] = root.glob("journal-*.jsonl")
    return path


def finish_some(store: JsonStorage) -> None:
    """a: completed, b: dead, c: failed (retry later), d: processing, e: pending."""
    store.enqueue([new_job(n, max_retries=0 if n == "b" else 3) for n in "abcde"])
    store.complete(store.claim("w1", T0, LEASE), OK, T0 + 1)  # type: ignore[arg-type]
    store.fail(store.claim("w1", T0, LEASE), BOOM, T0 + 1, None)  # type: ignore[arg-type]
    store.fail(store.claim("w1", T0, LEASE), BOOM, T0 + 1, T0 + 500)  # type: ignore[arg-type]
    store.claim("w2", T0, LEASE)


def everything(store: JsonStorage) -> dict[str, Any]:
    """All a user can observe, for before/after comparisons."""
    jobs = store.list_jobs()
    return {
        "jobs": [j.as_dict() for j in jobs],
        "attempts": {j.id: [a.as_dict() for a in store.attempts(j.id)] for j in jobs},
        "counts": store.counts(),
        "settings": store.get_settings(),
        "workers": [w.as_dict() for w in store.list_workers()],
        "next_run_at": store.next_run_at(),
        "by_state": {s: [j.id for j in store.list_jobs(s)] for s in JobState},
    }


# ------------------------------------------------------------------ layout

def test_layout_and_human_readable_files(store: JsonStorage, root: Path) -> None:
    finish_some(store)
    odd = "dir/with slash ü"
    store.enqueue([new_job(odd, priority=10)])
    store.complete(store.claim("w1", T0, LEASE), OK, T0 + 2)  # type: ignore[arg-type]
    store.compact()
    snap = json.loads((root / "snapshot.json").read_text())
    assert snap["format"] == "queuectl-json" and snap["version"] == FORMAT_VERSION
    assert snap["finished"] == {"default": {"completed": 2, "dead": 1, "cancelled": 0}}
    assert snap["paused"] == []
    assert sorted(j["id"] for j in snap["jobs"]) == ["c", "d", "e"], "only active jobs"
    name = job_file_name(odd)
    assert len(name) == 64 + 5 and "/" not in name
    doc = json.loads((root / "jobs" / name[:2] / name).read_text())
    assert doc["id"] == odd and doc["state"] == "completed" and len(doc["history"]) == 1
    assert (root / f"journal-{snap['generation']}.jsonl").exists() is False, "empty after compact"
    store.set_setting("max_retries", 5)
    line = json.loads(journal(root).read_text().splitlines()[-1])
    assert line == {"ops": [{"op": "setting", "key": "max_retries", "value": 5}]}


def test_files_and_directories_are_private(tmp_path: Path) -> None:
    old = os.umask(0)  # the modes must come from the store, not from the umask
    try:
        root = tmp_path / "store"
        store = JsonStorage(root, compact_bytes=4096)
        finish_some(store)
        store.compact()
        store.set_setting("k", 1)
        with journal(root).open("ab") as fh:
            fh.write(b'{"ops":[')  # a torn line: its bytes are kept in a side file
        store.set_setting("k", 2)
        store.close()
    finally:
        os.umask(old)
    assert list(root.glob("journal-*.torn-*"))
    seen = {"dirs": 0, "files": 0}
    for path in [root, *root.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        kind = "dirs" if path.is_dir() else "files"
        seen[kind] += 1
        assert mode == (0o700 if path.is_dir() else 0o600), f"{path}: {oct(mode)}"
    assert seen["dirs"] >= 4 and seen["files"] >= 5


def test_options_and_factory(tmp_path: Path) -> None:
    opts = JsonOptions()
    assert (opts.path, opts.fsync) == ("json", True)
    with pytest.raises(ValueError):
        JsonOptions.model_validate({"pth": "x"})
    [spec] = list(queuectl_storage_backends())
    assert spec.name == "json" and spec.factory is not None
    store = spec.factory(JsonOptions(path="sub/q", fsync=False), PluginContext(home=tmp_path))
    try:
        assert isinstance(store, JsonStorage)
        assert store.directory == tmp_path / "sub" / "q" and store.fsync is False
        assert store.describe() == f"json {tmp_path / 'sub' / 'q'}"
    finally:
        store.close()


# ------------------------------------------------------------------ damage

def test_corrupt_snapshot_is_an_error_and_left_alone(store: JsonStorage, root: Path) -> None:
    finish_some(store)
    store.compact()
    path = root / "snapshot.json"
    good = path.read_bytes()
    for damaged in (good[: len(good) // 2], b"", b"\x00" * 40,
                    good.replace(b'"queuectl-json"', b'"something-else"')):
        path.write_bytes(damaged)
        with pytest.raises(StorageError, match=str(path)) as err:
            JsonStorage(root)
        assert "backup" in str(err.value)
        with pytest.raises(StorageError, match=str(path)):
            store.enqueue([new_job("x")])  # an open instance notices too
        assert path.read_bytes() == damaged
    path.write_bytes(good)
    assert store.get("a") is not None


def test_newer_format_is_refused(store: JsonStorage, root: Path) -> None:
    store.compact()
    path = root / "snapshot.json"
    doc = path.read_bytes().replace(f'"version":{FORMAT_VERSION}'.encode(), b'"version":99')
    assert b'"version":99' in doc
    path.write_bytes(doc)
    with pytest.raises(StorageError, match="newer"):
        JsonStorage(root)
    assert path.read_bytes() == doc


def test_missing_snapshot_never_starts_empty(store: JsonStorage, root: Path) -> None:
    finish_some(store)
    store.close()
    (root / "snapshot.json").unlink()
    before = sorted(p.name for p in root.iterdir())
    with pytest.raises(StorageError, match="snapshot"):
        JsonStorage(root)
    assert sorted(p.name for p in root.iterdir()) == before


@pytest.mark.parametrize("bad", [b"not json", b'{"ops": 1}', b'{"ops":[{"op":"explode"}]}',
                                 b'{"ops":[{"op":"set","id":"nope","fields":{}}]}', b"",
                                 b'{"ops":[{"op":"import","jobs":[{"id":"x"}]}]}',
                                 b'{"ops":[{"op":"import","jobs":{}}]}',
                                 b'{"ops":[{"op":"imported","ids":[1]}]}'])
def test_corrupt_middle_journal_line_is_an_error(store: JsonStorage, root: Path,
                                                 bad: bytes) -> None:
    store.enqueue([new_job("a")])
    store.enqueue([new_job("b")])
    store.enqueue([new_job("c")])
    path = journal(root)
    lines = path.read_bytes().split(b"\n")
    lines[1] = bad
    damaged = b"\n".join(lines)
    path.write_bytes(damaged)
    with pytest.raises(StorageError, match=rf"{path}, line 2,"):
        JsonStorage(root)
    with pytest.raises(StorageError, match=str(path)):
        store.list_jobs()  # an open instance notices the journal changed under it
    assert path.read_bytes() == damaged


def test_corrupt_finished_job_file_is_an_error(store: JsonStorage, root: Path) -> None:
    finish_some(store)
    name = job_file_name("a")
    path = root / "jobs" / name[:2] / name
    for damaged in (b'{"id": "a", "state": "comp', b"[]", path.read_bytes().replace(
            b'"id":"a"', b'"id":"zz"')):
        path.write_bytes(damaged)
        for call in (lambda: store.get("a"), lambda: store.attempts("a"),
                     lambda: store.list_jobs(), lambda: store.list_jobs(JobState.COMPLETED),
                     lambda: store.dlq_retry("a", T0)):
            with pytest.raises(StorageError, match=str(path)):
                call()
        assert path.read_bytes() == damaged
    # Active jobs and other files are unaffected.
    assert store.get("b") is not None and store.list_jobs(JobState.PENDING)


# ------------------------------------------------------------------ torn tail

def test_torn_last_journal_line_is_ignored_then_cut_off(store: JsonStorage, root: Path) -> None:
    store.enqueue([new_job("a")])
    other = JsonStorage(root)
    path = journal(root)
    torn = b'{"ops":[{"op":"enqueue","jobs":[{"id":"ghost"'
    with path.open("ab") as fh:
        fh.write(torn)
    before = path.read_bytes()
    # Readers skip it and leave the file alone ...
    assert [j.id for j in store.list_jobs()] == ["a"]
    assert store.get("ghost") is None and store.counts()[JobState.PENDING] == 1
    assert path.read_bytes() == before
    # ... the next writer (or opening, which may write) cuts it off, keeping
    # its bytes aside, and appends cleanly.
    other.enqueue([new_job("b")])
    assert torn not in path.read_bytes()
    assert path.read_bytes().startswith(before[: -len(torn)])
    [kept] = root.glob("journal-*.torn-*")
    assert kept.read_bytes() == torn
    assert all(json.loads(line) for line in path.read_text().splitlines())
    fresh = JsonStorage(root)
    assert [j.id for j in fresh.list_jobs()] == ["a", "b"]
    assert fresh.get("ghost") is None
    for s in (other, fresh):
        s.close()


def test_file_written_but_not_committed_loses_to_the_journal(store: JsonStorage,
                                                             root: Path) -> None:
    """A crash between writing a finished job's file and the journal line:
    the job is still processing; the file is ignored and later replaced."""
    store.enqueue([new_job("a"), new_job("b")])
    claim = store.claim("w1", T0, LEASE)
    assert claim is not None
    other = JsonStorage(root)
    done = other.complete(other.claim("w1", T0, LEASE), OK, T0 + 1)  # type: ignore[arg-type]
    assert done is not None and done.id == "b"
    src = root / "jobs" / job_file_name("b")[:2] / job_file_name("b")
    orphan = root / "jobs" / job_file_name("a")[:2] / job_file_name("a")
    orphan.parent.mkdir(exist_ok=True)
    orphan.write_text(src.read_text().replace('"id":"b"', '"id":"a"'))
    for s in (store, JsonStorage(root)):
        assert s.get("a").state is JobState.PROCESSING  # type: ignore[union-attr]
        assert [j.id for j in s.list_jobs(JobState.COMPLETED)] == ["b"]
        assert [(j.id, j.state) for j in s.list_jobs()] == [
            ("a", JobState.PROCESSING), ("b", JobState.COMPLETED)]
        assert s.counts()[JobState.COMPLETED] == 1
    assert store.complete(claim, OK, T0 + 2) is not None
    assert json.loads(orphan.read_text())["finished_at"] == T0 + 2
    other.close()


def test_dlq_retry_crash_before_unlink_is_harmless(store: JsonStorage, root: Path) -> None:
    store.enqueue([new_job("a", max_retries=0)])
    store.fail(store.claim("w", T0, LEASE), BOOM, T0 + 1, None)  # type: ignore[arg-type]
    path = root / "jobs" / job_file_name("a")[:2] / job_file_name("a")
    dead = path.read_bytes()
    store.dlq_retry("a", T0 + 2)
    assert not path.exists()
    path.write_bytes(dead)  # as if the process died before removing it
    fresh = JsonStorage(root)
    assert fresh.get("a").state is JobState.PENDING  # type: ignore[union-attr]
    assert [(j.id, j.state) for j in fresh.list_jobs()] == [("a", JobState.PENDING)]
    assert fresh.list_jobs(JobState.DEAD) == [] and fresh.counts()[JobState.DEAD] == 0
    fresh.close()


# ------------------------------------------------------------------ compaction

def test_compaction_preserves_everything(root: Path) -> None:
    store = JsonStorage(root, compact_bytes=1 << 30)  # compact only when told
    viewer = JsonStorage(root, compact_bytes=1 << 30)
    finish_some(store)
    store.enqueue([new_job(f"p{i}", priority=i % 4, run_at=T0 + i) for i in range(50)])
    store.enqueue([new_job("zombie", max_retries=0)])
    store.set_setting("max_retries", 7)
    store.set_setting("backoff_base", 1.5)
    w = WorkerInfo(id="h:1:x", hostname="h", pid=1, started_at=T0, heartbeat_at=T0)
    store.register_worker(w)
    store.register_worker(w.replace(**{"id": "h:2:y", "pid": 2}))
    store.worker_heartbeat("h:1:x", T0 + 5, "d", 77)
    store.dlq_retry("b", T0 + 3)
    for _ in range(20):
        claim = store.claim("w3", T0 + 100, LEASE)
        assert claim is not None
        if claim.job.priority == 3:
            store.complete(claim, OK, T0 + 101)
        elif claim.job.priority == 2:
            store.fail(claim, BOOM, T0 + 101, None)
        else:
            store.renew(claim, T0 + 102, LEASE)
    store.recover_expired(T0 + 102 + LEASE + 1, worker_id="w2")
    before = everything(store)
    assert everything(viewer) == before
    generation = store._generation
    store.compact()
    assert store._generation == generation + 1
    assert sorted(p.name for p in root.glob("journal-*")) == [], "old journal removed"
    assert everything(store) == before
    assert everything(viewer) == before, "another instance follows the new snapshot"
    viewer.enqueue([new_job("after")])
    assert store.get("after") is not None
    store.close()
    viewer.close()
    fresh = JsonStorage(root)
    after = everything(fresh)
    assert after["jobs"][:-1] == before["jobs"] and after["jobs"][-1]["id"] == "after"
    fresh.close()


def test_automatic_compaction_keeps_the_journal_bounded(root: Path) -> None:
    store = JsonStorage(root, fsync=False, compact_bytes=4096)
    store.enqueue([new_job(f"j{i}") for i in range(30)])
    for _ in range(30):
        store.complete(store.claim("w", T0, LEASE), OK, T0)  # type: ignore[arg-type]
        store.worker_heartbeat("w", T0, None, None)
    assert store._generation > 2
    assert journal_size(root) <= 4096 + 2048
    snap = json.loads((root / "snapshot.json").read_text())
    assert all(j["state"] != "completed" for j in snap["jobs"]), "finished jobs never go there"
    assert snap["finished"]["default"]["completed"] + len(snap["jobs"]) == 30
    fresh = JsonStorage(root)
    assert [j.id for j in fresh.list_jobs(JobState.COMPLETED)] == [f"j{i}" for i in range(30)]
    for s in (store, fresh):
        s.close()


def journal_size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.glob("journal-*.jsonl"))


def test_compaction_leftovers_from_a_crash(store: JsonStorage, root: Path) -> None:
    """A crash after the new snapshot but before the old journal was removed:
    the old journal is ignored (and removed by the next compaction)."""
    store.enqueue([new_job("a")])
    old = journal(root)
    saved = old.read_bytes()
    store.compact()
    old.write_bytes(saved)  # as if it had not been removed yet
    (root / "tmp" / "123-dead.tmp").write_bytes(b"half a file")
    fresh = JsonStorage(root)
    assert [j.id for j in fresh.list_jobs()] == ["a"]
    fresh.enqueue([new_job("b")])
    fresh.compact()
    assert not old.exists() and not list((root / "tmp").iterdir())
    assert [j.id for j in JsonStorage(root).list_jobs()] == ["a", "b"]
    fresh.close()


# ------------------------------------------------------------------ sharing

def test_instances_see_each_others_changes(root: Path) -> None:
    a = JsonStorage(root, compact_bytes=4096)
    b = JsonStorage(root, compact_bytes=4096)
    a.enqueue([new_job("x"), new_job("y")])
    claim = b.claim("wb", T0, LEASE)
    assert claim is not None and claim.job.id == "x"
    assert a.get("x").state is JobState.PROCESSING  # type: ignore[union-attr]
    a.compact()
    assert b.complete(claim, OK, T0 + 1) is not None
    assert a.get("x").state is JobState.COMPLETED  # type: ignore[union-attr]
    assert a.counts()[JobState.COMPLETED] == 1
    with pytest.raises(Exception, match="already exists"):
        b.enqueue([new_job("x")])
    a.close()
    b.close()


def test_lock_timeout_is_reported(root: Path) -> None:
    store = JsonStorage(root, lock_timeout_ms=200)
    fd = os.open(root / "lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        start = time.monotonic()
        with pytest.raises(StorageError, match="busy"):
            store.enqueue([new_job("a")])
        assert time.monotonic() - start < 5
    finally:
        os.close(fd)
    store.enqueue([new_job("a")])
    store.close()


# ------------------------------------------------------------------ crashes

def _crash_child(root: Path, prefix: str, ack_fd: int, seed: int) -> None:
    """Work until killed; report each acknowledged change on ``ack_fd``."""
    rng = random.Random(seed)
    store = JsonStorage(root, fsync=rng.random() < 0.5, compact_bytes=4096)
    n = 0
    while True:
        n += 1
        job_id = f"{prefix}-{n}"
        store.enqueue([new_job(job_id, max_retries=0, command="x" * rng.randrange(0, 3000))])
        os.write(ack_fd, f"E {job_id}\n".encode())
        if rng.random() < 0.2:
            batch = [new_job_as_job(f"{job_id}-i{k}", state, max_retries=0,
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
        claim = store.claim(prefix, T0, LEASE)
        if claim is not None and rng.random() < 0.8:
            if rng.random() < 0.15:
                # Finished long ago: what the sweeps below may purge.
                os.write(ack_fd, f"A {claim.job.id}\n".encode())
                store.complete(claim, OK, T0 - 1000)
                os.write(ack_fd, f"O {claim.job.id}\n".encode())
            elif rng.random() < 0.7:
                store.complete(claim, OK, T0 + 1)
                os.write(ack_fd, f"C {claim.job.id}\n".encode())
                if rng.random() < 0.2:
                    os.write(ack_fd, f"P {claim.job.id}\n".encode())  # about to purge it
                    store.purge(states=[JobState.COMPLETED], ids=[claim.job.id])
                    os.write(ack_fd, f"Q {claim.job.id}\n".encode())
            else:
                store.fail(claim, BOOM, T0 + 1, None)
                os.write(ack_fd, f"D {claim.job.id}\n".encode())
                if rng.random() < 0.5:
                    os.write(ack_fd, f"T {claim.job.id}\n".encode())  # about to retry it
                    store.dlq_retry(claim.job.id, T0 + 2)
                    os.write(ack_fd, f"R {claim.job.id}\n".encode())
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
        store = JsonStorage(root)  # opens after every crash, whatever it hit
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


# ------------------------------------------------------------------ import

Exported = list[tuple[Job, list[Attempt]]]


def exported() -> Exported:
    """Jobs in every importable state, with histories, as another store
    exports them: a completed, b dead, c failed, d failed (lost attempt),
    e pending, then f dead and g completed with odd ids (g with output
    tails), and h cancelled, in its own queue with every optional field."""
    mem = MemoryStorage()
    mem.enqueue([new_job(n, max_retries=0 if n in "bf" else 3) for n in "abcde"])
    mem.complete(mem.claim("w1", T0, LEASE), OK, T0 + 1)  # type: ignore[arg-type]
    mem.fail(mem.claim("w1", T0, LEASE), BOOM, T0 + 1, None)  # type: ignore[arg-type]
    mem.fail(mem.claim("w1", T0, LEASE), BOOM, T0 + 1, T0 + 500)  # type: ignore[arg-type]
    mem.claim("w2", T0, LEASE)
    mem.recover_expired(T0 + 2, worker_id="w2")
    mem.enqueue([new_job("f/ dead ü", max_retries=0, priority=5),
                 new_job("g/ done", priority=4)])
    mem.fail(mem.claim("w3", T0, LEASE), BOOM, T0 + 3, None)  # type: ignore[arg-type]
    mem.complete(mem.claim("w3", T0, LEASE),  # type: ignore[arg-type]
                 ExecResult(exit_code=0, stdout_tail="dön€\n", stderr_tail=""), T0 + 3)
    mem.enqueue([new_job("h", queue="mail.out", timeout=2.5, cwd="/srv/ü",
                         env={"A": "1", "Ü": ""}, retry={"policy": "linear", "max_delay": 9.0})])
    mem.cancel("h", T0 + 4)
    records = [(j, mem.attempts(j.id)) for j in mem.list_jobs()]
    assert {j.state for j, _ in records} == set(JobState) - {JobState.PROCESSING}
    return records


def new_job_as_job(job_id: str, state: JobState = JobState.PENDING, **kw: Any) -> Job:
    fields: dict[str, Any] = {"command": f"echo {job_id}", "max_retries": 3, "run_at": T0,
                              "created_at": T0, "updated_at": T0}
    fields.update(kw)
    return Job(id=job_id, state=state, **fields)


def job_path(root: Path, job_id: str) -> Path:
    name = job_file_name(job_id)
    return root / "jobs" / name[:2] / name


def assert_imported(store: JsonStorage, records: Exported, before: list[str]) -> None:
    """Every imported job is there exactly as exported, after the jobs that
    were there before, and counted."""
    for job, history in records:
        assert store.get(job.id) == job
        assert store.attempts(job.id) == history
    assert [j.id for j in store.list_jobs()] == before + [j.id for j, _ in records]
    for state in JobState:
        want = [j.id for j, _ in records if j.state is state]
        got = [j.id for j in store.list_jobs(state) if j.id not in before]
        assert got == want, state
    counts = store.counts()
    assert counts[JobState.COMPLETED] == 2 and counts[JobState.DEAD] == 2
    assert counts[JobState.CANCELLED] == 1 and store.counts("mail.out")[JobState.CANCELLED] == 1
    for job, _ in records:
        with pytest.raises(DuplicateJobError):
            store.enqueue([new_job(job.id)])
        with pytest.raises(DuplicateJobError):
            store.import_jobs([(job, [])])


def test_import_writes_files_and_two_journal_lines(roomy: JsonStorage, root: Path) -> None:
    store = roomy
    records = exported()
    store.enqueue([new_job("old")])
    store.import_jobs(records)
    assert_imported(store, records, ["old"])
    lines = [json.loads(line) for line in journal(root).read_text().splitlines()]
    imp, done = lines[-2]["ops"], lines[-1]["ops"]
    assert [op["op"] for op in imp + done] == ["import", "imported"]
    assert [r["seq"] for r in imp[0]["jobs"]] == list(range(2, 2 + len(records)))
    finished = [j.id for j, _ in records if j.state in FINISHED]
    assert done[0]["ids"] == finished
    for job_id in finished:
        assert json.loads(job_path(root, job_id).read_text())["id"] == job_id
    assert store._unwritten == {}
    # Imported jobs take part in claims, retries and the DLQ like any other.
    assert store.claim("w", T0 + 1, LEASE).job.id == "old"  # type: ignore[union-attr]
    assert store.claim("w", T0 + 1, LEASE).job.id == "e"  # type: ignore[union-attr]
    assert store.dlq_retry("f/ dead ü", T0 + 2).state is JobState.PENDING
    assert not job_path(root, "f/ dead ü").exists()
    assert len(store.attempts("f/ dead ü")) == 1


def test_import_is_visible_from_another_instance(root: Path) -> None:
    a = JsonStorage(root, compact_bytes=1 << 30)
    b = JsonStorage(root, compact_bytes=1 << 30)
    b.enqueue([new_job("old")])
    records = exported()
    a.import_jobs(records)
    assert_imported(b, records, ["old"])
    with pytest.raises(DuplicateJobError):
        b.import_jobs([(new_job_as_job("new"), []), records[0]])
    assert b.get("new") is None
    assert b.claim("w", T0 + 1, LEASE).job.id == "old"  # type: ignore[union-attr]
    assert a.get("old").state is JobState.PROCESSING  # type: ignore[union-attr]
    a.close()
    b.close()


def test_import_refuses_processing_jobs_and_duplicates(store: JsonStorage) -> None:
    store.enqueue([new_job("old")])
    busy = new_job_as_job("busy", JobState.PROCESSING, worker_id="w", lease_expires_at=T0)
    for bad, error in (([(busy, [])], InvalidStateError),
                       ([(new_job_as_job("x"), []), (new_job_as_job("old"), [])],
                        DuplicateJobError),
                       ([(new_job_as_job("x"), []), (new_job_as_job("x"), [])],
                        DuplicateJobError)):
        with pytest.raises(error):
            store.import_jobs(bad)
    assert [j.id for j in store.list_jobs()] == ["old"]
    store.import_jobs([])
    assert store.counts()[JobState.PENDING] == 1


def _import_then_die(root: Path, records: Exported, files_before_death: int) -> None:
    """In a child: import, and die (like a SIGKILL: no cleanup) after writing
    some of the finished jobs' files, before the ``imported`` line."""
    store = JsonStorage(root, compact_bytes=1 << 30)
    real = store._atomic_write
    written = 0

    def dying_write(path: Path, data: bytes, *, sync_dir: bool = True) -> None:
        nonlocal written
        if written == files_before_death:
            os._exit(9)
        real(path, data, sync_dir=sync_dir)
        written += 1

    store._atomic_write = dying_write  # type: ignore[method-assign]
    store.import_jobs(records)
    os._exit(0)  # not reached


@pytest.mark.parametrize("files_before_death", [0, 1])
def test_crash_between_import_and_imported(root: Path, files_before_death: int) -> None:
    records = exported()
    store = JsonStorage(root, compact_bytes=1 << 30)
    store.enqueue([new_job("old")])
    viewer = JsonStorage(root, compact_bytes=1 << 30)  # opened before the import
    pid = os.fork()
    if pid == 0:
        try:
            _import_then_die(root, records, files_before_death)
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 9, "the child died between the two steps"
    lines = journal(root).read_text().splitlines()
    assert [op["op"] for op in json.loads(lines[-1])["ops"]] == ["import"]
    finished = [j.id for j, _ in records if j.state in FINISHED]
    assert sum(job_path(root, i).exists() for i in finished) == files_before_death
    # Every imported job is visible: to an instance that was open, to a new
    # one, and after compaction (which writes the missing files first).
    fresh = JsonStorage(root, compact_bytes=1 << 30)
    for s in (viewer, fresh):
        assert_imported(s, records, ["old"])
        assert set(s._unwritten) == set(finished)
    before = everything(fresh)
    assert everything(viewer) == before
    viewer.compact()
    assert viewer._unwritten == {}
    assert all(job_path(root, i).exists() for i in finished)
    assert not (root / "journal-1.jsonl").exists()
    snap = json.loads((root / "snapshot.json").read_text())
    assert snap["finished"] == {"default": {"completed": 2, "dead": 2, "cancelled": 0},
                                "mail.out": {"completed": 0, "dead": 0, "cancelled": 1}}
    assert sorted(j["id"] for j in snap["jobs"]) == ["c", "d", "e", "old"]
    for s in (viewer, fresh, store):
        assert everything(s) == before
        assert_imported(s, records, ["old"])
    reopened = JsonStorage(root)
    assert everything(reopened) == before and reopened._unwritten == {}
    for s in (viewer, fresh, store, reopened):
        s.close()


def test_leftover_import_is_settled_by_the_next_import_and_survives_dlq_retry(
        root: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Writing the files fails after the ``import`` line is committed: the
    import stands (it is reported as done), and its files come later."""
    records = exported()
    store = JsonStorage(root, compact_bytes=1 << 30)
    real = JsonStorage._atomic_write

    def failing(self: JsonStorage, path: Path, data: bytes, *, sync_dir: bool = True) -> None:
        if path.parent.parent.name == "jobs":
            raise OSError(28, "No space left on device")
        real(self, path, data, sync_dir=sync_dir)

    monkeypatch.setattr(JsonStorage, "_atomic_write", failing)
    store.import_jobs(records)
    assert "writing their files failed" in caplog.text
    other = JsonStorage(root, compact_bytes=1 << 30)
    for s in (store, other):
        assert_imported(s, records, [])
    assert not list((root / "jobs").rglob("*.json"))
    # A dead job that only exists in the journal goes back to the queue.
    assert other.dlq_retry("b", T0 + 5).state is JobState.PENDING
    assert store.counts()[JobState.DEAD] == 1
    assert store.get("b").state is JobState.PENDING  # type: ignore[union-attr]
    monkeypatch.undo()
    store.import_jobs([(new_job_as_job("later"), [])])
    assert store._unwritten == {} and other.get("g/ done") is not None
    assert other._unwritten == {}, "the 'imported' line reached the other instance"
    files = sorted(json.loads(p.read_text())["id"] for p in (root / "jobs").rglob("*.json"))
    assert files == ["a", "f/ dead ü", "g/ done", "h"], "no file for the revived job"
    fresh = JsonStorage(root)
    assert [(j.id, j.state) for j in fresh.list_jobs(JobState.DEAD)] == [
        ("f/ dead ü", JobState.DEAD)]
    assert fresh.get("b").state is JobState.PENDING  # type: ignore[union-attr]
    assert fresh.counts() == store.counts() == other.counts()
    for s in (store, other, fresh):
        s.close()


def test_torn_import_line_imports_nothing(roomy: JsonStorage, root: Path) -> None:
    """The ``import`` line is the commit point: cut short, none of it counts."""
    store = roomy
    store.enqueue([new_job("old")])
    store.import_jobs(exported())
    lines = journal(root).read_bytes().splitlines(keepends=True)
    journal(root).write_bytes(b"".join(lines[:-2]) + lines[-2][:-1])  # no newline
    for job, _ in exported():
        if job.state in FINISHED:
            job_path(root, job.id).unlink()  # files come only after the line
    fresh = JsonStorage(root)
    assert [j.id for j in fresh.list_jobs()] == ["old"]
    assert fresh.counts()[JobState.COMPLETED] == 0 and fresh.get("a") is None
    fresh.import_jobs(exported())  # and the ids are free again
    assert_imported(fresh, exported(), ["old"])
    fresh.close()


@pytest.mark.parametrize("compact_bytes", [1_048_576, 4096],
                         ids=["files-then-line", "compacted-by-the-import"])
def test_import_many_finished_jobs(root: Path, compact_bytes: int) -> None:
    store = JsonStorage(root, compact_bytes=compact_bytes)
    store.enqueue([new_job("before")])
    n = 2000
    records: Exported = []
    for i in range(n):
        state = JobState.DEAD if i % 10 == 0 else JobState.COMPLETED
        job = new_job_as_job(f"old-{i}", state, attempts=1, started_at=T0, finished_at=T0 + 1,
                             updated_at=T0 + 1, exit_code=3 if state is JobState.DEAD else 0,
                             last_error="boom" if state is JobState.DEAD else None)
        outcome: AttemptOutcome = "failed" if state is JobState.DEAD else "completed"
        records.append((job, [Attempt(job_id=job.id, number=1, worker_id="w0", started_at=T0,
                                      finished_at=T0 + 1, outcome=outcome,
                                      exit_code=job.exit_code)]))
    records.append((new_job_as_job("imported-pending", priority=1), []))
    start = time.monotonic()
    store.import_jobs(records)
    elapsed = time.monotonic() - start
    assert elapsed < 60, elapsed
    counts = store.counts()
    assert counts[JobState.COMPLETED] == n - n // 10 and counts[JobState.DEAD] == n // 10
    assert counts[JobState.PENDING] == 2
    assert store._unwritten == {}
    assert len(list((root / "jobs").rglob("*.json"))) == n
    claim = store.claim("w", T0, LEASE)
    assert claim is not None and claim.job.id == "imported-pending"
    assert store.complete(claim, OK, T0 + 1) is not None
    assert store.claim("w", T0, LEASE).job.id == "before"  # type: ignore[union-attr]
    fresh = JsonStorage(root)
    assert fresh.counts()[JobState.COMPLETED] == n - n // 10 + 1
    assert len(fresh.list_jobs(JobState.DEAD)) == n // 10
    assert fresh.attempts("old-7") == records[7][1]
    with pytest.raises(DuplicateJobError):
        fresh.enqueue([new_job("old-1999")])
    fresh.close()
    store.close()
