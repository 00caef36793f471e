"""Stores written by earlier versions open with everything kept and work on:
a format-1 store and a format-2 store written by the version before the thin
storage seam (both upgraded to the current format by the first change). Both were
written once by that code and are kept in ``data/`` (see its README), with
what that code showed of them (``*.expected.json``)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from json_store_helpers import job_path

from queuectl_core.errors import StorageError
from queuectl_core.ledger import Ledger
from queuectl_core.models import Attempt, Claim, ExecResult, Job, JobState, WorkerInfo
from queuectl_core.testing.conformance import LEASE, OK, T0
from queuectl_json.store import FORMAT_VERSION, JsonStorage

DATA = Path(__file__).parent / "data"
HOUR = 3_600_000
ODD = "ü/odd id ✓ \"q\""


def copy_store(name: str, to: Path) -> Path:
    shutil.copytree(DATA / name, to)
    return to


def expected(name: str) -> dict[str, Any]:
    """What the code that wrote the store showed of it, as today's records
    (the held claim's token is the processing job's ``claim_token``)."""
    doc = json.loads((DATA / f"{name}.expected.json").read_text(encoding="utf-8"))
    return view_of(doc, doc["held"])


def view_of(doc: dict[str, Any], held: dict[str, Any]) -> dict[str, Any]:
    def job(values: dict[str, Any]) -> Job:
        token = held["token"] if values["state"] == "processing" else None
        return Job(**values, claim_token=token)

    return {
        "jobs": [job(j) for j in doc["jobs"]],
        "attempts": {k: [Attempt(**a) for a in v] for k, v in doc["attempts"].items()},
        # (states added since count 0)
        "counts": {**dict.fromkeys(JobState, 0),
                   **{JobState(k): v for k, v in doc["counts"].items()}},
        "settings": doc["settings"],
        "workers": [WorkerInfo(**w) for w in doc["workers"]],
        "next_run_at": doc["next_run_at"],
    }


def everything(store: Ledger) -> dict[str, Any]:
    jobs = store.list_jobs()
    return {"jobs": jobs, "attempts": {j.id: store.attempts(j.id) for j in jobs},
            "counts": store.counts(), "settings": store.get_settings(),
            "workers": store.list_workers(), "next_run_at": store.next_run_at()}


def held_claim(store: Ledger, name: str) -> Claim:
    """The claim that the store's worker still holds."""
    held = json.loads((DATA / f"{name}.expected.json").read_text(encoding="utf-8"))["held"]
    job = store.get(held["job_id"])
    assert job is not None and job.claim_token == held["token"]
    return Claim(job=job, token=held["token"], worker_id=held["worker_id"],
                 attempt=held["attempt"], lease_expires_at=held["lease_expires_at"])


# ------------------------------------------------------------------ format 1

def test_a_format_1_store_opens_with_everything_kept_and_works_on(tmp_path: Path) -> None:
    root = copy_store("store_format1", tmp_path / "store")
    want = expected("store_format1")
    assert len(want["jobs"]) == 10 and want["counts"][JobState.COMPLETED] == 3
    old_file = job_path(root, "a").read_bytes()
    assert b"queue" not in old_file

    store = Ledger(JsonStorage(root, compact_bytes=1 << 30))
    assert everything(store) == want
    snap = json.loads((root / "snapshot.json").read_text())
    assert snap["version"] == FORMAT_VERSION and snap["generation"] == 3, "upgraded on opening"
    assert [p.name for p in root.glob("journal-*.jsonl")] == ["journal-3.jsonl"]
    assert snap["journal"] is True, "its journal is kept from now on"
    assert job_path(root, "a").read_bytes() == old_file, "old job files are kept as they are"
    assert job_path(root, "g").exists() and job_path(root, "h").exists()
    for job in want["jobs"]:
        assert (job.queue, job.env, job.cancel_requested_at) == ("default", None, None)
    reopened = Ledger(JsonStorage(root))
    assert everything(reopened) == want
    # It works on as any store: the worker's claim still holds ...
    done = reopened.complete(held_claim(reopened, "store_format1"), OK, T0 + 9)
    assert done is not None and done.id == "d"
    # ... attempts go on numbering after the history ...
    c = store.claim("w", T0 + 200, LEASE)
    assert c is not None and c.job.id == "c" and c.attempt == 2 and c.job.attempts == 2
    store.complete(c, ExecResult(exit_code=0, stdout_tail="ok"), T0 + 201)
    assert [a.number for a in store.attempts("f")] == [1, 1], "old numbers are kept"
    # ... and purge finds the jobs that format 1 finished, through the index
    # built from their files.
    assert store.purge(states=[JobState.COMPLETED], finished_before=T0 + 8) == ["g", "a", "f"]
    assert store.purge(states=[JobState.DEAD]) == ["h", "b"]
    assert reopened.cancel("e", T0 + 10).state is JobState.CANCELLED
    assert store.counts() == {**dict.fromkeys(JobState, 0), JobState.PENDING: 2,
                              JobState.COMPLETED: 2, JobState.CANCELLED: 1}
    assert [j.id for j in Ledger(JsonStorage(root)).list_jobs()] == ["c", "d", "e", ODD, "i"]
    for s in (store, reopened):
        s.close()


def test_a_format_1_store_read_without_writing_is_left_alone(tmp_path: Path) -> None:
    """An instance that has a format-1 snapshot under it (restored from a
    backup while it runs) reads it as it is, and upgrades it on its next
    change."""
    new = tmp_path / "new"
    store = Ledger(JsonStorage(new))
    old = copy_store("store_format1", tmp_path / "old")
    want = expected("store_format1")
    for name in ("snapshot.json", "journal-2.jsonl"):
        (new / name).unlink(missing_ok=True)
        os.replace(old / name, new / name)
    os.rmdir(new / "jobs")
    os.replace(old / "jobs", new / "jobs")
    assert everything(store) == want
    assert json.loads((new / "snapshot.json").read_text())["version"] == 1
    store.set_setting("k", 1)
    assert json.loads((new / "snapshot.json").read_text())["version"] == FORMAT_VERSION
    assert {**everything(store), "settings": want["settings"]} == want
    store.close()


def test_a_damaged_job_file_does_not_keep_a_format_1_store_from_opening(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = copy_store("store_format1", tmp_path / "store")
    path = job_path(root, "a")
    path.write_bytes(b'{"id": "a", "state": "comp')
    store = Ledger(JsonStorage(root))
    assert str(path) in caplog.text, "the upgrade names the file it could not index"
    with pytest.raises(StorageError, match=str(path)):
        store.get("a")
    assert path.read_bytes() == b'{"id": "a", "state": "comp'
    assert store.purge(states=[JobState.COMPLETED], finished_before=T0 + 8) == ["g", "f"]
    store.close()


# ------------------------------------------------------------------ format 2

def test_a_format_2_store_from_the_previous_version_opens_and_works_on(tmp_path: Path) -> None:
    """Written by the store before the seam was thinned: a snapshot, index
    files, job files and a journal with every kind of line (a cancel asked
    of a running job, a finish, a revive, purges, one whose file lingers, an
    import whose files were never written, the old heartbeat line, a torn
    last line). Opening it replays all that and upgrades it (a compaction);
    it reads as it did, and going on agrees with what that version did next
    (``follow_up``)."""
    root = copy_store("store_format2", tmp_path / "store")
    doc = json.loads((DATA / "store_format2.expected.json").read_text(encoding="utf-8"))
    journal = root / "journal-2.jsonl"
    lines = journal.read_bytes()
    torn = lines[lines.rfind(b"\n") + 1:]
    assert torn and job_path(root, "cancel-me").exists(), "a purged job's file lingers"
    store = Ledger(JsonStorage(root, compact_bytes=1 << 30))
    assert everything(store) == expected("store_format2")
    [kept] = root.glob("journal-2.jsonl.torn-*")
    assert kept.read_bytes() == torn, "only the torn line was left out"
    snap = json.loads((root / "snapshot.json").read_text())
    assert (snap["version"], snap["generation"]) == (FORMAT_VERSION, 3), "upgraded on opening"
    assert not journal.exists(), "folded into the new snapshot"
    assert not job_path(root, "cancel-me").exists(), "the upgrade removes what purges left"
    assert store.get("cancel-me") is None and store.get("done-2") is None

    then = doc["follow_up"]
    held = held_claim(store, "store_format2")
    done = store.fail(held, ExecResult(signal=15, error="killed"), T0 + 5 * HOUR,
                      T0 + 6 * HOUR)
    assert done == view_of({**doc, "jobs": [then["held_after_fail"]]}, doc["held"])["jobs"][0]
    claims: list[list[Any] | None] = []
    for _ in range(4):
        c = store.claim("w3", T0 + 5 * HOUR, LEASE)
        claims.append(None if c is None else [c.job.id, c.attempt])
        if c is not None:
            store.complete(c, OK, T0 + 5 * HOUR + 1)
    assert claims == then["claims"]
    revived = store.dlq_retry("imp-dead", T0 + 5 * HOUR + 2)
    assert revived.state is JobState.PENDING and revived.run_at == T0 + 5 * HOUR + 2
    assert store.purge(states=[JobState.COMPLETED], finished_before=T0 + 2 * HOUR) == then[
        "purge_completed_before_2h"]
    assert store.purge(states=[JobState.DEAD]) == then["purge_dead"]
    assert store.purge(states=[JobState.COMPLETED, JobState.DEAD, JobState.CANCELLED],
                       limit=2) == then["purge_all_limit_2"]
    after = view_of(then["after"], doc["held"])
    for s in (store, Ledger(JsonStorage(root))):
        now = everything(s)
        assert now["counts"] == after["counts"]
        assert [(j.id, j.state) for j in now["jobs"]] == [(j.id, j.state) for j in after["jobs"]]
        assert now["attempts"] == after["attempts"]
        assert (now["settings"], now["workers"]) == (after["settings"], after["workers"])
    raw = store.store
    assert isinstance(raw, JsonStorage)
    raw.compact()
    assert everything(Ledger(JsonStorage(root))) == everything(store)
    store.close()
