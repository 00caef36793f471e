"""Compaction (folding the journal into a new snapshot) keeps everything, and
several instances (processes) share one store, each following the others'
changes."""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from json_store_helpers import claim, finish_some, raw

from queuectl_core.errors import InvalidStateError, StorageError
from queuectl_core.ledger import Ledger
from queuectl_core.models import JobState, WorkerInfo
from queuectl_core.testing.conformance import BOOM, LEASE, OK, T0, new_job
from queuectl_json.store import JsonStorage, job_file_name


def journal_size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.glob("journal-*.jsonl"))


def everything(store: Ledger) -> dict[str, Any]:
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


def test_compaction_keeps_everything_for_every_instance(root: Path) -> None:
    store = Ledger(JsonStorage(root, compact_bytes=1 << 30))  # compact only when told
    viewer = Ledger(JsonStorage(root, compact_bytes=1 << 30))
    finish_some(store)
    store.enqueue([new_job(f"p{i}", priority=i % 4, run_at=T0 + i) for i in range(50)])
    store.enqueue([new_job("zombie", max_retries=0)])
    store.set_setting("max_retries", 7)
    store.set_setting("backoff_base", 1.5)
    w = WorkerInfo(id="h:1:x", hostname="h", pid=1, started_at=T0, heartbeat_at=T0)
    store.register_worker(w)
    store.register_worker(w.replace(id="h:2:y", pid=2))
    store.worker_heartbeat("h:1:x", T0 + 5, "d", 77)
    store.dlq_retry("b", T0 + 3)
    for _ in range(20):
        c = claim(store, T0 + 100, worker="w3")
        if c.job.priority == 3:
            store.complete(c, OK, T0 + 101)
        elif c.job.priority == 2:
            store.fail(c, BOOM, T0 + 101, None)
        else:
            store.renew(c, T0 + 102, LEASE)
    store.recover_expired(T0 + 102 + LEASE + 1, worker_id="w2")
    before = everything(store)
    assert everything(viewer) == before
    generation = raw(store)._journal.generation
    raw(store).compact()
    assert raw(store)._journal.generation == generation + 1
    # The old journal is removed; the new one starts with its header line.
    assert sorted(p.name for p in root.glob("journal-*")) == [f"journal-{generation + 1}.jsonl"]
    assert (root / f"journal-{generation + 1}.jsonl").read_text() == (
        f'{{"ops":[],"journal":{generation + 1}}}\n')
    assert everything(store) == before
    assert everything(viewer) == before, "another instance follows the new snapshot"
    viewer.enqueue([new_job("after")])
    assert store.get("after") is not None
    store.close()
    viewer.close()
    fresh = Ledger(JsonStorage(root))
    after = everything(fresh)
    assert after["jobs"][:-1] == before["jobs"] and after["jobs"][-1]["id"] == "after"
    fresh.close()


def test_automatic_compaction_keeps_the_journal_bounded(root: Path) -> None:
    store = Ledger(JsonStorage(root, fsync=False, compact_bytes=4096))
    store.enqueue([new_job(f"j{i}") for i in range(30)])
    store.register_worker(WorkerInfo(id="w", hostname="h", pid=1, started_at=T0,
                                     heartbeat_at=T0))
    for i in range(30):
        store.complete(claim(store, worker="w"), OK, T0)
        store.worker_heartbeat("w", T0 + i, None, None)
    assert raw(store)._journal.generation > 2
    assert journal_size(root) <= 4096 + 2048
    snap = json.loads((root / "snapshot.json").read_text())
    assert all(j["state"] != "completed" for j in snap["jobs"]), "finished jobs never go there"
    assert snap["finished"]["default"]["completed"] + len(snap["jobs"]) == 30
    fresh = Ledger(JsonStorage(root))
    assert [j.id for j in fresh.list_jobs(JobState.COMPLETED)] == [f"j{i}" for i in range(30)]
    assert [w.heartbeat_at for w in fresh.list_workers()] == [T0 + 29]
    for s in (store, fresh):
        s.close()


def test_what_a_compaction_leaves_after_a_crash_is_ignored_then_removed(root: Path) -> None:
    """A crash after the new snapshot but before the old journal was removed:
    the old journal is ignored (and removed by the next compaction)."""
    store = Ledger(JsonStorage(root, compact_bytes=1 << 30))
    store.enqueue([new_job("a")])
    [old] = root.glob("journal-*.jsonl")
    saved = old.read_bytes()
    raw(store).compact()
    old.write_bytes(saved)  # as if it had not been removed yet
    (root / "tmp" / "123-dead.tmp").write_bytes(b"half a file")
    fresh = Ledger(JsonStorage(root))
    assert [j.id for j in fresh.list_jobs()] == ["a"]
    fresh.enqueue([new_job("b")])
    raw(fresh).compact()
    assert not old.exists() and not list((root / "tmp").iterdir())
    assert [j.id for j in Ledger(JsonStorage(root)).list_jobs()] == ["a", "b"]
    fresh.close()
    store.close()


def test_instances_see_each_others_changes(root: Path) -> None:
    a = Ledger(JsonStorage(root, compact_bytes=4096))
    b = Ledger(JsonStorage(root, compact_bytes=4096))
    a.enqueue([new_job("x"), new_job("y")])
    held = claim(b, worker="wb")
    assert held.job.id == "x"
    assert a.get("x").state is JobState.PROCESSING  # type: ignore[union-attr]
    raw(a).compact()
    assert b.complete(held, OK, T0 + 1) is not None
    assert a.get("x").state is JobState.COMPLETED  # type: ignore[union-attr]
    assert a.counts()[JobState.COMPLETED] == 1
    with pytest.raises(Exception, match="already exists"):
        b.enqueue([new_job("x")])
    a.close()
    b.close()


def test_a_cancel_from_another_process_reaches_the_worker(root: Path) -> None:
    worker = Ledger(JsonStorage(root))
    operator = Ledger(JsonStorage(root))
    worker.enqueue([new_job("a"), new_job("b")])
    held = claim(worker)
    assert operator.cancel("a", T0 + 1).cancel_requested_at == T0 + 1
    assert operator.cancel("b", T0 + 1).state is JobState.CANCELLED
    with pytest.raises(InvalidStateError):
        worker.cancel("b", T0 + 2)
    done = worker.fail(held, BOOM, T0 + 3, T0 + 100)
    assert done is not None and done.state is JobState.CANCELLED
    assert operator.counts()[JobState.CANCELLED] == 2
    for job_id in ("a", "b"):
        name = job_file_name(job_id)
        assert (root / "jobs" / name[:2] / name).exists()
    assert operator.set_queue_paused("default", True)
    assert worker.paused_queues() == ["default"]
    assert not worker.set_queue_paused("default", True)
    for s in (worker, operator):
        s.close()


def test_a_lock_held_too_long_is_reported_as_busy(root: Path) -> None:
    store = Ledger(JsonStorage(root, lock_timeout_ms=200))
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
