"""Purges and the finished-job index: a purge reads only what it deletes,
agrees with the memory store over random histories, drops index lines that
no longer match, and a removed index is rebuilt."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from json_store_helpers import job_path, raw

from queuectl_core.errors import StorageError
from queuectl_core.ledger import Ledger
from queuectl_core.models import Claim, Job, JobState
from queuectl_core.testing import MemoryStorage
from queuectl_core.testing.conformance import BOOM, LEASE, OK, T0, new_job
from queuectl_json.files import Files
from queuectl_json.index import Index
from queuectl_json.store import INDEX_BUCKET_MS, JsonStorage

HOUR = INDEX_BUCKET_MS
DONE = [JobState.COMPLETED, JobState.DEAD, JobState.CANCELLED]


def claim(store: Ledger, now: int = T0, worker: str = "w") -> Claim:
    got = store.claim(worker, now, LEASE)
    assert got is not None
    return got


def index_entries(root: Path) -> dict[str, list[list[Any]]]:
    """Index file (``state/start``) -> its entries."""
    return {f"{p.parent.name}/{p.stem}": [json.loads(line) for line in p.read_text().splitlines()]
            for p in sorted((root / "index").glob("*/*.jsonl"))}


@pytest.fixture
def store(root: Path) -> Iterator[Ledger]:
    # Compacts only when told; fsync only matters for power loss.
    s = Ledger(JsonStorage(root, fsync=False, compact_bytes=1 << 30))
    yield s
    s.close()


def finish_over_hours(store: Ledger, count: int, hours: int) -> dict[str, int]:
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


def test_a_purge_reads_only_what_it_deletes(store: Ledger, root: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    finished = finish_over_hours(store, 2000, 40)
    raw(store).compact()
    assert len(index_entries(root)) == 40, "one index file per hour"
    reads = {"jobs": 0, "index": 0}
    real_job, real_index = Files.read_finished, Index.read

    def count_job(self: Files, job_id: str) -> Any:
        reads["jobs"] += 1
        return real_job(self, job_id)

    def count_index(self: Index, path: Path) -> Any:
        reads["index"] += 1
        return real_index(self, path)

    monkeypatch.setattr(Files, "read_finished", count_job)
    monkeypatch.setattr(Index, "read", count_index)
    oldest = sorted(finished, key=lambda i: finished[i])
    gone = store.purge(states=[JobState.COMPLETED, JobState.CANCELLED],
                       finished_before=T0 + 30 * HOUR, limit=20)
    assert gone == oldest[:20]
    assert reads == {"jobs": 20, "index": 1}, "the search's reads serve the purge too"
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


def test_purges_agree_with_the_memory_store_over_random_histories(root: Path) -> None:
    """Random histories (finishes spread over hours, retries from the DLQ,
    cancels, ids enqueued again after a purge, compactions at random):
    every purge returns what the memory store returns, in the same order."""
    rng = random.Random(1)
    json_store = Ledger(JsonStorage(root, fsync=False, compact_bytes=4096))
    memory = Ledger(MemoryStorage())
    stores = (json_store, memory)
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
            raw(json_store).compact()
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
    reopened = Ledger(JsonStorage(root))
    assert reopened.list_jobs() == memory.list_jobs()
    assert reopened.purge(states=DONE) == memory.purge(states=DONE)
    assert reopened.counts() == memory.counts()
    assert index_entries(root) == {}, "every finished job purged: the index is empty"
    for s in (json_store, reopened):
        s.close()


def test_index_lines_that_no_longer_match_their_job_are_dropped(store: Ledger,
                                                                root: Path) -> None:
    store.enqueue([new_job("d", max_retries=0), new_job("c")])
    store.fail(claim(store), BOOM, T0 + 1, None)
    store.complete(claim(store), OK, T0 + 2)
    raw(store).compact()
    assert index_entries(root) == {f"dead/{T0 - T0 % HOUR}": [[T0 + 1, 1, "d"]],
                                   f"completed/{T0 - T0 % HOUR}": [[T0 + 2, 2, "c"]]}
    store.dlq_retry("d", T0 + 3)
    assert store.purge(states=[JobState.DEAD]) == [], "back in the queue"
    assert index_entries(root) == {f"completed/{T0 - T0 % HOUR}": [[T0 + 2, 2, "c"]]}
    store.fail(claim(store, T0 + 3), BOOM, T0 + 2 * HOUR, None)  # dead again, later
    raw(store).compact()
    assert store.purge(states=DONE, finished_before=T0 + 2 * HOUR) == ["c"]
    assert store.purge(states=DONE) == ["d"]
    assert index_entries(root) == {}


def test_a_purge_between_the_search_and_the_change_is_not_undone(root: Path) -> None:
    """Another process changes the store between ``finished`` and the purge
    that follows: the purge checks the jobs again and keeps the index right."""
    mine = JsonStorage(root, compact_bytes=1 << 30)
    other = Ledger(JsonStorage(root, compact_bytes=1 << 30))
    other.enqueue([new_job(i) for i in "abc"])
    for _ in range(3):
        other.complete(claim(other), OK, T0 + 1)
    raw(other).compact()
    found = mine.finished([JobState.COMPLETED])
    assert [j.id for j in found] == ["a", "b", "c"]
    assert other.purge(states=[JobState.COMPLETED], ids=["b"]) == ["b"]
    other.enqueue([new_job("b", command="again")])
    done = Ledger(mine).purge(states=[JobState.COMPLETED], ids=["a", "b", "c"])
    assert done == ["a", "c"] and other.get("b") is not None
    other.complete(claim(other), OK, T0 + 2)
    raw(other).compact()
    assert other.purge(states=[JobState.COMPLETED]) == ["b"]
    assert index_entries(root) == {}
    mine.close()
    other.close()


def test_imported_jobs_whose_files_are_not_written_can_be_purged(
        store: Ledger, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = Files.atomic_write

    def failing(self: Files, path: Path, data: bytes, *, sync_dir: bool = True) -> None:
        if path.parent.parent.name == "jobs":
            raise OSError(28, "No space left on device")
        real(self, path, data, sync_dir=sync_dir)

    monkeypatch.setattr(Files, "atomic_write", failing)
    old = [Job(id=f"old{i}", command="x", state=JobState.COMPLETED, max_retries=0,
               run_at=T0, created_at=T0, updated_at=T0 + i, finished_at=None)
           for i in range(3)]
    store.import_jobs([(j, []) for j in old])
    assert raw(store)._state.unwritten.keys() == {"old0", "old1", "old2"}
    assert store.purge(states=[JobState.COMPLETED], finished_before=T0 + 2) == ["old0", "old1"]
    monkeypatch.undo()
    raw(store).compact()
    assert [j.id for j in store.list_jobs()] == ["old2"]
    assert not job_path(root, "old0").exists() and job_path(root, "old2").exists()
    assert store.purge(states=[JobState.COMPLETED]) == ["old2"]


def test_a_removed_index_is_rebuilt_and_a_damaged_one_named(store: Ledger,
                                                            root: Path) -> None:
    finish_over_hours(store, 30, 3)
    raw(store).compact()
    saved = index_entries(root)
    store.close()
    for path in (root / "index").glob("*/*"):
        path.unlink()
    for path in (root / "index").iterdir():
        path.rmdir()
    (root / "index").rmdir()
    reopened = Ledger(JsonStorage(root))
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
