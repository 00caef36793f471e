"""Format 2 of the JSON store: the new job fields in every file, cancel and
pause on disk, purge (its crash safety and its index), and opening a store
written by format 1 (the code before it, kept verbatim in
``data/store_v1.py.txt``)."""

from __future__ import annotations

import json
import os
import random
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from queuectl_core.errors import InvalidStateError, StorageError
from queuectl_core.models import (
    Attempt,
    AttemptOutcome,
    Claim,
    ExecResult,
    Job,
    JobState,
    NewJob,
    Record,
    WorkerInfo,
)
from queuectl_core.storage import Storage
from queuectl_core.testing import MemoryStorage
from queuectl_json.store import FORMAT_VERSION, INDEX_BUCKET_MS, JsonStorage, job_file_name

T0 = 1_800_000_000_000
HOUR = INDEX_BUCKET_MS
LEASE = 10_000
OK = ExecResult(exit_code=0)
BOOM = ExecResult(exit_code=3, error="boom")
DONE = [JobState.COMPLETED, JobState.DEAD, JobState.CANCELLED]
ENV = {"LANG": "C.UTF-8", "ÜNI": "värde = \"1\"\n", "EMPTY": ""}
RETRY = {"policy": "linear", "backoff_base": 3.5, "max_delay": 60.0, "jitter": 0.25}


def new_job(job_id: str, **kw: Any) -> NewJob:
    fields: dict[str, Any] = {"command": f"echo {job_id}", "max_retries": 3, "run_at": T0,
                              "created_at": T0}
    fields.update(kw)
    return NewJob(id=job_id, **fields)


def job_path(root: Path, job_id: str) -> Path:
    name = job_file_name(job_id)
    return root / "jobs" / name[:2] / name


def journal_ops(root: Path) -> list[dict[str, Any]]:
    return [op for path in sorted(root.glob("journal-*.jsonl"))
            for line in path.read_text().splitlines() for op in json.loads(line)["ops"]]


def index_entries(root: Path) -> dict[str, list[list[Any]]]:
    """Index file (``state/start``) -> its entries."""
    return {f"{p.parent.name}/{p.stem}": [json.loads(line) for line in p.read_text().splitlines()]
            for p in sorted((root / "index").glob("*/*.jsonl"))}


def claim(store: Storage, now: int = T0, worker: str = "w") -> Claim:
    got = store.claim(worker, now, LEASE)
    assert got is not None
    return got


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def store(root: Path) -> Iterator[JsonStorage]:
    s = JsonStorage(root, compact_bytes=1 << 30)  # compacts only when told
    yield s
    s.close()


# ------------------------------------------------------------------ new fields

def test_new_fields_are_in_every_file_and_read_back_exactly(store: JsonStorage,
                                                            root: Path) -> None:
    store.enqueue([new_job("full", queue="mail.out-2", timeout=1.5, cwd="/tmp/wörk dir",
                           env=ENV, retry=RETRY, priority=2),
                   new_job("waiting", queue="slow", timeout=30.0, env={"X": "ÿ"}),
                   new_job("doomed")])
    assert store.set_queue_paused("slow", True)
    tails = ExecResult(exit_code=0, stdout_tail="last ✓ line\n\x1b[0m", stderr_tail="wärn\n")
    store.complete(claim(store), tails, T0 + 1)
    running = claim(store)
    assert running.job.id == "doomed"
    store.cancel("doomed", T0 + 2)
    store.fail(running, ExecResult(signal=15, error="killed", stderr_tail="bye"), T0 + 3,
               T0 + 9)
    ops = journal_ops(root)
    [enqueued] = [op for op in ops if op["op"] == "enqueue"]
    assert enqueued["jobs"][0]["env"] == ENV and enqueued["jobs"][0]["retry"] == RETRY
    assert {"op": "pause", "queue": "slow", "paused": True} in ops
    assert [op["state"] for op in ops if op["op"] == "finish"] == ["completed", "cancelled"]
    full = json.loads(job_path(root, "full").read_text(encoding="utf-8"))
    assert (full["queue"], full["timeout"], full["cwd"], full["env"], full["retry"]) == (
        "mail.out-2", 1.5, "/tmp/wörk dir", ENV, RETRY)
    assert "wörk" in job_path(root, "full").read_text(encoding="utf-8"), "readable UTF-8"
    assert full["history"][0]["stdout_tail"] == "last ✓ line\n\x1b[0m"
    doomed = json.loads(job_path(root, "doomed").read_text())
    assert doomed["state"] == "cancelled" and doomed["history"][0]["outcome"] == "cancelled"
    assert doomed["history"][0]["stderr_tail"] == "bye"

    def observed(s: JsonStorage) -> Any:
        return ([j for j in s.list_jobs()], {j.id: s.attempts(j.id) for j in s.list_jobs()},
                s.counts(), s.counts("mail.out-2"), s.paused_queues())

    before = observed(store)
    other = JsonStorage(root)  # replays the journal, checking every record
    assert observed(other) == before
    store.compact()
    snap = json.loads((root / "snapshot.json").read_text())
    assert snap["version"] == FORMAT_VERSION == 2 and snap["paused"] == ["slow"]
    assert snap["finished"] == {"default": {"completed": 0, "dead": 0, "cancelled": 1},
                                "mail.out-2": {"completed": 1, "dead": 0, "cancelled": 0}}
    [waiting] = snap["jobs"]
    assert waiting["env"] == {"X": "ÿ"} and waiting["timeout"] == 30.0
    for s in (store, other, JsonStorage(root)):
        assert observed(s) == before
        job = s.get("full")
        assert job is not None and job.env == ENV and type(job.timeout) is float
        assert s.counts()[JobState.CANCELLED] == 1
        assert s.list_jobs(JobState.CANCELLED) == [s.get("doomed")]
        assert [j.id for j in s.list_jobs(queue="slow")] == ["waiting"]
        assert s.claim("w", T0 + 10**6, LEASE) is None, "its queue is paused"
    other.close()


def test_enqueue_refuses_a_record_that_could_not_be_read_back(store: JsonStorage,
                                                              root: Path) -> None:
    store.enqueue([new_job("fine")])
    for bad in (new_job("nul", env={"A": "x\x00y"}), new_job("r", retry={"nope": 1}),
                new_job("t", timeout=float("inf"))):
        with pytest.raises(StorageError, match="cannot enqueue"):
            store.enqueue([new_job("ok"), bad])
    assert [j.id for j in JsonStorage(root).list_jobs()] == ["fine"]


def test_returned_jobs_do_not_share_the_stored_dicts(store: JsonStorage) -> None:
    store.enqueue([new_job("a", env={"K": "v"})])
    job = store.get("a")
    assert job is not None and job.env is not None
    job.env["K"] = "changed"
    assert store.get("a").env == {"K": "v"}  # type: ignore[union-attr]


def test_cancel_from_another_process_reaches_the_worker(root: Path) -> None:
    worker = JsonStorage(root)
    operator = JsonStorage(root)
    worker.enqueue([new_job("a"), new_job("b")])
    held = claim(worker)
    assert operator.cancel("a", T0 + 1).cancel_requested_at == T0 + 1
    assert operator.cancel("b", T0 + 1).state is JobState.CANCELLED
    with pytest.raises(InvalidStateError):
        worker.cancel("b", T0 + 2)
    done = worker.fail(held, BOOM, T0 + 3, T0 + 100)
    assert done is not None and done.state is JobState.CANCELLED
    assert operator.counts()[JobState.CANCELLED] == 2
    assert job_path(root, "a").exists() and job_path(root, "b").exists()
    assert operator.set_queue_paused("default", True)
    assert worker.paused_queues() == ["default"]
    assert not worker.set_queue_paused("default", True)
    for s in (worker, operator):
        s.close()


# ------------------------------------------------------------------ purge

def finish_over_hours(store: JsonStorage, count: int, hours: int) -> dict[str, int]:
    """``count`` completed jobs finished over ``hours`` hours (in a shuffled
    order); returns id -> finish time."""
    ids = [f"j{i:05d}" for i in range(count)]
    store.enqueue([new_job(i) for i in ids])
    times = [T0 + (i * hours * HOUR) // count for i in range(count)]
    random.Random(3).shuffle(times)
    finished = {}
    for at in times:
        c = claim(store)
        store.complete(c, OK, at)
        finished[c.job.id] = at
    return finished


def test_purge_reads_only_what_it_deletes(store: JsonStorage, root: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    finished = finish_over_hours(store, 2000, 40)
    store.compact()
    assert len(index_entries(root)) == 40, "one index file per hour"
    reads = {"jobs": 0, "index": 0}
    real_job, real_index = JsonStorage._read_finished, JsonStorage._read_index

    def count_job(self: JsonStorage, job_id: str) -> Any:
        reads["jobs"] += 1
        return real_job(self, job_id)

    def count_index(self: JsonStorage, path: Path) -> Any:
        reads["index"] += 1
        return real_index(self, path)

    monkeypatch.setattr(JsonStorage, "_read_finished", count_job)
    monkeypatch.setattr(JsonStorage, "_read_index", count_index)
    oldest = sorted(finished, key=lambda i: finished[i])
    gone = store.purge(states=[JobState.COMPLETED, JobState.CANCELLED],
                       finished_before=T0 + 30 * HOUR, limit=20)
    assert gone == oldest[:20]
    assert reads == {"jobs": 20, "index": 1}
    reads.update(jobs=0, index=0)
    assert store.purge(states=[JobState.COMPLETED], finished_before=T0) == []
    assert reads == {"jobs": 0, "index": 0}, "nothing that old: nothing read"
    # A sweep that has caught up reads the one hour that straddles the cutoff.
    cutoff = T0 + 3 * HOUR + HOUR // 2
    while len(store.purge(states=[JobState.COMPLETED], finished_before=cutoff,
                          limit=30)) == 30:
        pass
    reads.update(jobs=0, index=0)
    assert store.purge(states=[JobState.COMPLETED], finished_before=cutoff, limit=30) == []
    assert reads == {"jobs": 0, "index": 1}
    remaining = sorted(i for i in finished if finished[i] >= cutoff)
    assert sorted(j.id for j in store.list_jobs(JobState.COMPLETED)) == remaining
    assert store.counts()[JobState.COMPLETED] == len(remaining)
    assert len(index_entries(root)) == 37, "emptied index files are removed"


def test_purge_agrees_with_the_memory_store(root: Path) -> None:
    """Random histories (finishes spread over hours, retries from the DLQ,
    cancels, ids enqueued again after a purge, compactions at random):
    every purge returns what the memory store returns, in the same order."""
    rng = random.Random(1)
    json_store = JsonStorage(root, fsync=False, compact_bytes=4096)
    memory = MemoryStorage()
    stores: tuple[Storage, Storage] = (json_store, memory)
    ids: list[str] = []
    purged: list[str] = []
    now = T0 + 1000 * HOUR
    total = 0

    def when() -> int:
        return T0 + rng.randrange(0, 12 * HOUR) // rng.choice([1, 1, 1000])

    for step in range(700):
        roll = rng.random()
        if roll < 0.2:
            batch = [f"j{len(ids) + k}" for k in range(rng.randrange(1, 6))]
            if purged and rng.random() < 0.3:
                batch.append(purged.pop(rng.randrange(len(purged))))
            ids.extend(b for b in batch if b not in ids)
            jobs = [new_job(i, priority=rng.randrange(3), queue=rng.choice(["default", "b"]),
                            max_retries=1) for i in batch]
            for s in stores:
                s.enqueue(jobs)
        elif roll < 0.55:
            claims = [s.claim("w", now, LEASE) for s in stores]
            if claims[0] is None:
                assert claims[1] is None
                continue
            assert claims[1] is not None and claims[0].job.id == claims[1].job.id
            if rng.random() < 0.1:
                for s in stores:
                    s.cancel(claims[0].job.id, now)
            kind, at = rng.random(), when()
            retry = at if kind < 0.2 else None
            for s, c in zip(stores, claims, strict=True):
                assert c is not None
                if kind > 0.5:
                    s.complete(c, OK, at)
                else:
                    s.fail(c, BOOM, at, retry)
        elif roll < 0.6:
            waiting = [j.id for j in memory.list_jobs() if j.state in (
                JobState.PENDING, JobState.FAILED)]
            if waiting:
                job_id, at = rng.choice(waiting), when()
                assert json_store.cancel(job_id, at) == memory.cancel(job_id, at)
        elif roll < 0.65:
            dead = [j.id for j in memory.list_jobs(JobState.DEAD)]
            if dead:
                job_id = rng.choice(dead)
                assert json_store.dlq_retry(job_id, now) == memory.dlq_retry(job_id, now)
        elif roll < 0.7:
            json_store.compact()
        else:
            states = rng.sample(DONE, rng.randrange(1, 4))
            before = rng.choice([None, when(), when()])
            limit = rng.choice([None, 1, 2, 5, 20])
            chosen = rng.sample(ids, min(len(ids), 4)) if rng.random() < 0.2 else None
            got = [s.purge(states=states, finished_before=before, ids=chosen, limit=limit)
                   for s in stores]
            assert got[0] == got[1], (step, states, before, limit, chosen)
            purged.extend(got[0])
            total += len(got[0])
        if step % 50 == 0 or roll >= 0.7:
            assert json_store.counts() == memory.counts()
    assert total > 100 and len(ids) > 200, "the history was varied enough"
    for job_id in ids:
        assert json_store.get(job_id) == memory.get(job_id)
        assert json_store.attempts(job_id) == memory.attempts(job_id)
    assert json_store.list_jobs() == memory.list_jobs()
    reopened = JsonStorage(root)
    assert reopened.list_jobs() == memory.list_jobs()
    assert reopened.purge(states=DONE) == memory.purge(states=DONE)
    assert reopened.counts() == memory.counts()
    assert index_entries(root) == {}, "every finished job purged: the index is empty"
    for s in (json_store, reopened):
        s.close()


def test_index_entries_that_no_longer_match_are_dropped(store: JsonStorage,
                                                        root: Path) -> None:
    store.enqueue([new_job("d", max_retries=0), new_job("c")])
    store.fail(claim(store), BOOM, T0 + 1, None)
    store.complete(claim(store), OK, T0 + 2)
    store.compact()
    assert index_entries(root) == {f"dead/{T0 - T0 % HOUR}": [[T0 + 1, 1, "d"]],
                                   f"completed/{T0 - T0 % HOUR}": [[T0 + 2, 2, "c"]]}
    store.dlq_retry("d", T0 + 3)
    assert store.purge(states=[JobState.DEAD]) == [], "back in the queue"
    assert index_entries(root) == {f"completed/{T0 - T0 % HOUR}": [[T0 + 2, 2, "c"]]}
    store.fail(claim(store, T0 + 3), BOOM, T0 + 2 * HOUR, None)  # dead again, later
    store.compact()
    assert store.purge(states=DONE, finished_before=T0 + 2 * HOUR) == ["c"]
    assert store.purge(states=DONE) == ["d"]
    assert index_entries(root) == {}


def test_purge_of_imported_jobs_whose_files_are_not_written(
        store: JsonStorage, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = JsonStorage._atomic_write

    def failing(self: JsonStorage, path: Path, data: bytes, *, sync_dir: bool = True) -> None:
        if path.parent.parent.name == "jobs":
            raise OSError(28, "No space left on device")
        real(self, path, data, sync_dir=sync_dir)

    monkeypatch.setattr(JsonStorage, "_atomic_write", failing)
    old = [Job(id=f"old{i}", command="x", state=JobState.COMPLETED, max_retries=0,
               run_at=T0, created_at=T0, updated_at=T0 + i, finished_at=None)
           for i in range(3)]
    store.import_jobs([(j, []) for j in old])
    assert store._unwritten.keys() == {"old0", "old1", "old2"}
    assert store.purge(states=[JobState.COMPLETED], finished_before=T0 + 2) == ["old0", "old1"]
    monkeypatch.undo()
    store.compact()
    assert [j.id for j in store.list_jobs()] == ["old2"]
    assert not job_path(root, "old0").exists() and job_path(root, "old2").exists()
    assert store.purge(states=[JobState.COMPLETED]) == ["old2"]


def _purge_then_die(root: Path, step: str) -> None:
    """In a child: purge every finished job and die (no cleanup, like a
    SIGKILL) at ``step``, after the purge line is committed."""
    store = JsonStorage(root, compact_bytes=1 << 30)

    def die(*args: Any, **kwargs: Any) -> None:
        os._exit(9)

    if step == "files":
        store._remove_finished = die  # type: ignore[method-assign]
    else:
        store._prune_index = die  # type: ignore[method-assign]
    store.purge(states=[JobState.COMPLETED, JobState.CANCELLED])
    os._exit(0)  # not reached


@pytest.mark.parametrize("step", ["files", "index"])
def test_crash_after_the_purge_line(root: Path, step: str) -> None:
    store = JsonStorage(root, compact_bytes=1 << 30)
    store.enqueue([new_job(i) for i in ("a", "b", "c", "keep", "x")])
    for _ in range(3):
        store.complete(claim(store), OK, T0 + 1)
    store.compact()  # a, b, c are in the index files
    store.cancel("x", T0 + 2)  # x is only in the journal so far
    viewer = JsonStorage(root, compact_bytes=1 << 30)
    pid = os.fork()
    if pid == 0:
        try:
            _purge_then_die(root, step)
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 9, "the child died after committing"
    assert [op["op"] for op in journal_ops(root)][-1] == "purge"
    gone = ["a", "b", "c", "x"]
    assert all(job_path(root, i).exists() for i in gone) == (step == "files")
    fresh = JsonStorage(root, compact_bytes=1 << 30)
    for s in (viewer, fresh):
        assert [j.id for j in s.list_jobs()] == ["keep"]
        assert s.list_jobs(JobState.COMPLETED) == [] and s.get("a") is None
        assert s.attempts("a") == [] and s.counts()[JobState.COMPLETED] == 0
        assert s.purge(states=DONE) == []
    fresh.enqueue([new_job("b", command="again")])  # a purged id is free
    assert viewer.get("b").state is JobState.PENDING  # type: ignore[union-attr]
    viewer.compact()
    assert [i for i in gone if job_path(root, i).exists()] == (["b"] if step == "files" else [])
    assert index_entries(root) == {}
    again = JsonStorage(root)
    assert [(j.id, j.state) for j in again.list_jobs()] == [("keep", JobState.PENDING),
                                                            ("b", JobState.PENDING)]
    done = again.complete(claim(again), OK, T0 + 5)
    assert done is not None and done.id == "keep"
    assert again.complete(claim(again), OK, T0 + 6) is not None
    assert json.loads(job_path(root, "b").read_text())["command"] == "again"
    assert again.purge(states=DONE) == ["keep", "b"]
    for s in (store, viewer, fresh, again):
        s.close()


def test_index_is_rebuilt_when_removed_and_damage_is_reported(store: JsonStorage,
                                                              root: Path) -> None:
    finish_over_hours(store, 30, 3)
    store.compact()
    saved = index_entries(root)
    store.close()
    for path in (root / "index").glob("*/*"):
        path.unlink()
    for path in (root / "index").iterdir():
        path.rmdir()
    (root / "index").rmdir()
    reopened = JsonStorage(root)
    assert index_entries(root) == saved
    path = sorted((root / "index").glob("completed/*.jsonl"))[0]
    good = path.read_text()
    lines = len(good.splitlines())
    path.write_text(good + '["broken"]\n')
    with pytest.raises(StorageError, match=rf"{path}, line {lines + 1},.*rebuilt"):
        reopened.purge(states=[JobState.COMPLETED])
    assert path.read_text() == good + '["broken"]\n'
    path.write_text(good + '[1, 2, "gone"]\n["torn')  # a crash while appending: ignored
    assert len(reopened.purge(states=[JobState.COMPLETED])) == 30
    assert index_entries(root) == {}
    reopened.close()


# ------------------------------------------------------------------ format 1

@dataclass(frozen=True, slots=True)
class V1Job(Record):
    """``Job`` as format 1 knew it."""

    id: str
    command: str
    state: JobState
    max_retries: int
    run_at: int
    created_at: int
    updated_at: int
    attempts: int = 0
    priority: int = 0
    started_at: int | None = None
    finished_at: int | None = None
    worker_id: str | None = None
    lease_expires_at: int | None = None
    last_error: str | None = None
    exit_code: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.state, JobState):
            object.__setattr__(self, "state", JobState(self.state))


@dataclass(frozen=True, slots=True)
class V1Attempt(Record):
    """``Attempt`` as format 1 knew it."""

    job_id: str
    number: int
    worker_id: str
    started_at: int
    finished_at: int | None = None
    outcome: AttemptOutcome = "running"
    exit_code: int | None = None
    signal: int | None = None
    error: str | None = None


def load_v1_store() -> Any:
    """The format-1 store module (the code before format 2, verbatim), with
    the records it was written against."""
    path = Path(__file__).parent / "data" / "store_v1.py.txt"
    module = types.ModuleType("queuectl_json_store_v1")
    module.__file__ = str(path)
    sys.modules[module.__name__] = module
    try:
        exec(compile(path.read_text(), str(path), "exec"), module.__dict__)
    finally:
        del sys.modules[module.__name__]
    assert module.__dict__["FORMAT_VERSION"] == 1
    job_fields = V1Job.field_names()
    module.__dict__.update(
        Job=V1Job, Attempt=V1Attempt, _JOB_FIELDS=job_fields,
        _SETTABLE=frozenset(job_fields) - {"id"} | {"claim_token"},
        _ATTEMPT_KEYS=frozenset(V1Attempt.field_names()) - {"job_id"})
    # Written against the seam of its day: the methods added since are not
    # needed to write a store.
    module.__dict__["JsonStorage"].__abstractmethods__ = frozenset()
    return module


def v1_everything(store: Any) -> dict[str, Any]:
    """What the format-1 code shows, as today's records."""
    jobs = [Job(**j.as_dict()) for j in store.list_jobs()]
    return {
        "jobs": jobs,
        "attempts": {j.id: [Attempt(**a.as_dict()) for a in store.attempts(j.id)]
                     for j in jobs},
        "counts": store.counts(),
        "settings": store.get_settings(),
        "workers": store.list_workers(),
        "next_run_at": store.next_run_at(),
    }


def everything(store: JsonStorage) -> dict[str, Any]:
    jobs = store.list_jobs()
    return {"jobs": jobs, "attempts": {j.id: store.attempts(j.id) for j in jobs},
            "counts": store.counts(), "settings": store.get_settings(),
            "workers": store.list_workers(), "next_run_at": store.next_run_at()}


ODD = "ü/odd id ✓ \"q\""


def write_v1_store(root: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Claim]:
    """A store written by format 1 in every shape it can be in: a snapshot
    with active jobs, journal lines after it (claims, a completion, a job
    back from the DLQ, an import whose files were never written), finished
    job files, settings, workers and a torn last line. Returns the module
    and a claim its worker still holds."""
    v1 = load_v1_store()
    old = v1.JsonStorage(root, compact_bytes=1 << 30)
    old.enqueue([new_job("c", priority=5), new_job("d", priority=4), new_job("a", priority=3),
                 new_job("b", priority=2, max_retries=0), new_job("f", priority=1, max_retries=0),
                 new_job("e"), new_job(ODD, priority=-1, run_at=T0 + 5000,
                                       command="printf 'ü\\n' && echo \"x\ny\"")])
    old.fail(old.claim("w-old", T0, LEASE), BOOM, T0 + 1, T0 + 100)        # c: failed
    held = old.claim("w-old", T0 + 1, LEASE)                                # d: processing
    old.complete(old.claim("w-old", T0 + 1, LEASE), OK, T0 + 2)            # a: completed
    old.fail(old.claim("w-old", T0 + 1, LEASE), BOOM, T0 + 3, None)        # b: dead
    old.fail(old.claim("w-old", T0 + 1, LEASE), BOOM, T0 + 4, None)        # f: dead ...
    old.dlq_retry("f", T0 + 5)                                              # ... and back
    old.set_setting("max_retries", 5)
    worker = WorkerInfo(id="h:1:x", hostname="h", pid=1, started_at=T0, heartbeat_at=T0)
    old.register_worker(worker)
    old.compact()
    # After the snapshot: journal lines only.
    f = old.claim("w-old", T0 + 6, LEASE)
    assert f.job.id == "f" and f.attempt == 1, "format 1 numbered by the retry count"
    old.complete(f, OK, T0 + 7)
    real = old._atomic_write

    def failing(path: Path, data: bytes, *, sync_dir: bool = True) -> None:
        if path.parent.parent.name == "jobs":
            raise OSError(28, "No space left on device")
        real(path, data, sync_dir=sync_dir)

    monkeypatch.setattr(old, "_atomic_write", failing)
    imported = [
        (V1Job(id="g", command="x", state=JobState.COMPLETED, max_retries=3, run_at=T0 - 90,
               created_at=T0 - 90, updated_at=T0 - 50, attempts=1, started_at=T0 - 60,
               finished_at=T0 - 50, exit_code=0),
         [V1Attempt(job_id="g", number=1, worker_id="far", started_at=T0 - 60,
                    finished_at=T0 - 50, outcome="completed", exit_code=0)]),
        (V1Job(id="h", command="x", state=JobState.DEAD, max_retries=0, run_at=T0 - 90,
               created_at=T0 - 90, updated_at=T0 - 40, attempts=1, last_error="boom"), []),
        (V1Job(id="i", command="x", state=JobState.PENDING, max_retries=3, run_at=T0 - 90,
               created_at=T0 - 90, updated_at=T0 - 90), []),
    ]
    old.import_jobs(imported)
    monkeypatch.undo()
    assert set(old._unwritten) == {"g", "h"}, "their files were never written"
    old.worker_heartbeat("h:1:x", T0 + 8, "d", 4242)
    old.close()
    with next(root.glob("journal-*.jsonl")).open("ab") as fh:
        fh.write(b'{"ops":[{"op":"enqueue","jobs":[{"id":"ghost"')
    return v1, held


def test_a_format_1_store_opens_with_everything_kept(root: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    v1, held = write_v1_store(root, monkeypatch)
    viewer = v1.JsonStorage(root)
    expected = v1_everything(viewer)
    viewer.close()
    assert len(expected["jobs"]) == 10 and expected["counts"][JobState.COMPLETED] == 3
    old_file = job_path(root, "a").read_bytes()
    assert b"queue" not in old_file

    store = JsonStorage(root, compact_bytes=1 << 30)
    assert everything(store) == expected
    snap = json.loads((root / "snapshot.json").read_text())
    assert snap["version"] == 2 and snap["generation"] == 3, "upgraded on opening"
    assert [p.name for p in root.glob("journal-*.jsonl")] == []
    assert job_path(root, "a").read_bytes() == old_file, "old job files are kept as they are"
    assert job_path(root, "g").exists() and job_path(root, "h").exists()
    for job in expected["jobs"]:
        assert (job.queue, job.env, job.cancel_requested_at) == ("default", None, None)
    reopened = JsonStorage(root)
    assert everything(reopened) == expected
    # An older queuectl-json refuses the store now, rather than misread it.
    with pytest.raises(StorageError, match="newer"):
        v1.JsonStorage(root)
    # It works on as any store: the worker's claim still holds ...
    token = Claim(job=Job(**held.job.as_dict()), token=held.token, worker_id="w-old",
                  attempt=1, lease_expires_at=held.lease_expires_at)
    done = reopened.complete(token, OK, T0 + 9)
    assert done is not None and done.id == "d"
    # ... attempts go on numbering after the history ...
    c = claim(store, T0 + 200)
    assert c.job.id == "c" and c.attempt == 2 and c.job.attempts == 2
    store.complete(c, ExecResult(exit_code=0, stdout_tail="ok"), T0 + 201)
    assert [a.number for a in store.attempts("f")] == [1, 1], "old numbers are kept"
    # ... and purge finds the jobs that format 1 finished, through the index
    # built from their files.
    assert store.purge(states=[JobState.COMPLETED], finished_before=T0 + 8) == ["g", "a", "f"]
    assert store.purge(states=[JobState.DEAD]) == ["h", "b"]
    assert reopened.cancel("e", T0 + 10).state is JobState.CANCELLED
    assert store.counts() == {JobState.PENDING: 2, JobState.PROCESSING: 0,
                              JobState.COMPLETED: 2, JobState.FAILED: 0, JobState.DEAD: 0,
                              JobState.CANCELLED: 1}
    assert [j.id for j in JsonStorage(root).list_jobs()] == ["c", "d", "e", ODD, "i"]
    for s in (store, reopened):
        s.close()


def test_a_format_1_store_read_without_writing_is_left_alone(
        root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An instance that has a format-1 snapshot under it (restored from a
    backup while it runs) reads it as it is, and upgrades it on its next
    change."""
    store = JsonStorage(root / "new")
    v1, _ = write_v1_store(root / "old", monkeypatch)
    viewer = v1.JsonStorage(root / "old")
    expected = v1_everything(viewer)
    viewer.close()
    for name in ("snapshot.json", "journal-2.jsonl"):
        (root / "new" / name).unlink(missing_ok=True)
        os.replace(root / "old" / name, root / "new" / name)
    os.rmdir(root / "new" / "jobs")
    os.replace(root / "old" / "jobs", root / "new" / "jobs")
    assert everything(store) == expected
    assert json.loads((root / "new" / "snapshot.json").read_text())["version"] == 1
    store.set_setting("k", 1)
    assert json.loads((root / "new" / "snapshot.json").read_text())["version"] == 2
    assert {**everything(store), "settings": expected["settings"]} == expected
    store.close()


def test_a_damaged_job_file_does_not_keep_a_format_1_store_from_opening(
        root: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    write_v1_store(root, monkeypatch)
    path = job_path(root, "a")
    path.write_bytes(b'{"id": "a", "state": "comp')
    store = JsonStorage(root)
    assert str(path) in caplog.text, "the upgrade names the file it could not index"
    with pytest.raises(StorageError, match=str(path)):
        store.get("a")
    assert path.read_bytes() == b'{"id": "a", "state": "comp'
    assert store.purge(states=[JobState.COMPLETED], finished_before=T0 + 8) == ["g", "f"]
    store.close()
