"""Imports (``queuectl import``): all of a batch in one journal line, its
finished jobs' files written after it, visible to every instance, and a
large import in one step."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from json_store_helpers import FINISHED, Exported, claim, job_path, journal, raw

from queuectl_core.errors import DuplicateJobError, StorageError
from queuectl_core.ledger import Ledger
from queuectl_core.models import Attempt, ExecResult, Job, JobState
from queuectl_core.testing import MemoryStorage
from queuectl_core.testing.conformance import BOOM, OK, T0, new_job
from queuectl_json.store import JsonStorage

if TYPE_CHECKING:
    from queuectl_core.models import AttemptOutcome


def job_in(job_id: str, state: JobState = JobState.PENDING, **kw: Any) -> Job:
    """A job as another store exports it."""
    fields: dict[str, Any] = {"command": f"echo {job_id}", "max_retries": 3, "run_at": T0,
                              "created_at": T0, "updated_at": T0}
    fields.update(kw)
    return Job(id=job_id, state=state, **fields)


def exported() -> Exported:
    """Jobs in every importable state, with histories, as another store
    exports them: a completed, b dead, c failed, d failed (lost attempt),
    e pending, then f dead and g completed with odd ids (g with output
    tails), h cancelled, in its own queue with every optional field, then
    i waiting for e, and j skipped (it ran after b)."""
    mem = Ledger(MemoryStorage())
    mem.enqueue([new_job(n, max_retries=0 if n in "bf" else 3) for n in "abcde"])
    mem.complete(claim(mem), OK, T0 + 1)
    mem.fail(claim(mem), BOOM, T0 + 1, None)
    mem.fail(claim(mem), BOOM, T0 + 1, T0 + 500)
    claim(mem, worker="w2")
    mem.recover_expired(T0 + 2, worker_id="w2")
    mem.enqueue([new_job("f/ dead ü", max_retries=0, priority=5),
                 new_job("g/ done", priority=4)])
    mem.fail(claim(mem, worker="w3"), BOOM, T0 + 3, None)
    mem.complete(claim(mem, worker="w3"),
                 ExecResult(exit_code=0, stdout_tail="dön€\n", stderr_tail=""), T0 + 3)
    mem.enqueue([new_job("h", queue="mail.out", timeout=2.5, cwd="/srv/ü",
                         env={"A": "1", "Ü": ""}, retry={"policy": "linear", "max_delay": 9.0})])
    mem.cancel("h", T0 + 4)
    mem.enqueue([new_job("i", after=["e"], concurrency_key="k", unique_key="u"),
                 new_job("j", after=["b"])])
    records = [(j, mem.attempts(j.id)) for j in mem.list_jobs()]
    assert {j.state for j, _ in records} == set(JobState) - {JobState.PROCESSING}
    return records


def assert_imported(store: Ledger, records: Exported, before: list[str]) -> None:
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


def test_an_import_is_one_line_then_its_files_then_a_second_line(store: Ledger,
                                                                 root: Path) -> None:
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
    assert raw(store)._state.unwritten == {}
    # Imported jobs take part in claims, retries and the DLQ like any other.
    assert claim(store, T0 + 1).job.id == "old"
    assert claim(store, T0 + 1).job.id == "e"
    assert store.dlq_retry("f/ dead ü", T0 + 2).state is JobState.PENDING
    assert not job_path(root, "f/ dead ü").exists()
    assert len(store.attempts("f/ dead ü")) == 1


def test_new_jobs_are_one_enqueue_line(store: Ledger, root: Path) -> None:
    store.import_jobs([(new_job("fresh"), [])])  # no history, pending: a new job
    store.enqueue([new_job("a"), new_job("b")])
    lines = [json.loads(line) for line in journal(root).read_text().splitlines()]
    assert [[op["op"] for op in line["ops"]] for line in lines] == [[], ["enqueue"], ["enqueue"]]
    assert [r["id"] for r in lines[2]["ops"][0]["jobs"]] == ["a", "b"]


def test_an_import_is_visible_from_another_instance(root: Path) -> None:
    a = Ledger(JsonStorage(root, compact_bytes=1 << 30))
    b = Ledger(JsonStorage(root, compact_bytes=1 << 30))
    b.enqueue([new_job("old")])
    records = exported()
    a.import_jobs(records)
    assert_imported(b, records, ["old"])
    with pytest.raises(DuplicateJobError):
        b.import_jobs([(job_in("new"), []), records[0]])
    assert b.get("new") is None
    assert claim(b, T0 + 1).job.id == "old"
    assert a.get("old").state is JobState.PROCESSING  # type: ignore[union-attr]
    a.close()
    b.close()


def test_an_import_refuses_processing_jobs_and_duplicates(store: Ledger) -> None:
    store.enqueue([new_job("old")])
    busy = job_in("busy", JobState.PROCESSING, worker_id="w", lease_expires_at=T0,
                  claim_token="t")
    with pytest.raises(StorageError, match="processing"):
        raw(store).insert([(job_in("x"), []), (busy, [])])  # (the core settles them first)
    twice: list[Exported] = [[(job_in("x"), []), (job_in("old"), [])],
                             [(job_in("x"), []), (job_in("x"), [])]]
    for bad in twice:
        with pytest.raises(DuplicateJobError):
            store.import_jobs(bad)
    assert [j.id for j in store.list_jobs()] == ["old"]
    store.import_jobs([])
    assert store.counts()[JobState.PENDING] == 1


@pytest.mark.parametrize("compact_bytes", [1_048_576, 4096],
                         ids=["files-then-line", "compacted-by-the-import"])
def test_a_large_import_is_fast_and_complete(root: Path, compact_bytes: int) -> None:
    store = Ledger(JsonStorage(root, compact_bytes=compact_bytes))
    store.enqueue([new_job("before")])
    n = 2000
    records: Exported = []
    for i in range(n):
        state = JobState.DEAD if i % 10 == 0 else JobState.COMPLETED
        job = job_in(f"old-{i}", state, attempts=1, started_at=T0, finished_at=T0 + 1,
                     updated_at=T0 + 1, exit_code=3 if state is JobState.DEAD else 0,
                     last_error="boom" if state is JobState.DEAD else None)
        outcome: AttemptOutcome = "failed" if state is JobState.DEAD else "completed"
        records.append((job, [Attempt(job_id=job.id, number=1, worker_id="w0", started_at=T0,
                                      finished_at=T0 + 1, outcome=outcome,
                                      exit_code=job.exit_code)]))
    records.append((job_in("imported-pending", priority=1), []))
    start = time.monotonic()
    store.import_jobs(records)
    elapsed = time.monotonic() - start
    assert elapsed < 60, elapsed
    counts = store.counts()
    assert counts[JobState.COMPLETED] == n - n // 10 and counts[JobState.DEAD] == n // 10
    assert counts[JobState.PENDING] == 2
    assert raw(store)._state.unwritten == {}
    assert len(list((root / "jobs").rglob("*.json"))) == n
    first = claim(store)
    assert first.job.id == "imported-pending"
    assert store.complete(first, OK, T0 + 1) is not None
    assert claim(store).job.id == "before"
    fresh = Ledger(JsonStorage(root))
    assert fresh.counts()[JobState.COMPLETED] == n - n // 10 + 1
    assert len(fresh.list_jobs(JobState.DEAD)) == n // 10
    assert fresh.attempts("old-7") == records[7][1]
    with pytest.raises(DuplicateJobError):
        fresh.enqueue([new_job("old-1999")])
    fresh.close()
    store.close()
