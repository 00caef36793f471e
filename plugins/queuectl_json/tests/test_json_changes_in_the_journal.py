"""How the core's changes are stored: every call that changes jobs is one
journal line (its commit point), made of the operations format 2 has always
had, which another instance replays to the same state."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from json_store_helpers import claim, job_path, raw

from queuectl_core.errors import StorageError
from queuectl_core.ledger import Ledger
from queuectl_core.models import Attempt, AttemptChange, Change, JobState, Outcome
from queuectl_core.testing.conformance import BOOM, LEASE, OK, T0, new_job
from queuectl_core.transitions import fence
from queuectl_json.store import JsonStorage


def lines(root: Path) -> list[list[dict[str, Any]]]:
    """The journal's lines, each a list of operations."""
    return [json.loads(line)["ops"] for path in sorted(root.glob("journal-*.jsonl"))
            for line in path.read_text().splitlines()]


def kinds(line: list[dict[str, Any]]) -> list[str]:
    return [op["op"] for op in line]


def everything(store: Ledger) -> dict[str, Any]:
    jobs = store.list_jobs()
    return {"jobs": jobs, "attempts": {j.id: store.attempts(j.id) for j in jobs},
            "counts": store.counts(), "next_run_at": store.next_run_at()}


def replayed_alike(store: Ledger, root: Path) -> None:
    """A new instance (checking every line it replays) sees the same, and so
    does one that reads a compacted snapshot."""
    before = everything(store)
    fresh = Ledger(JsonStorage(root, compact_bytes=1 << 30))
    assert everything(fresh) == before
    raw(fresh).compact()
    assert everything(store) == before
    assert everything(Ledger(JsonStorage(root))) == before
    fresh.close()


def test_results_and_the_next_claims_are_one_line(store: Ledger, root: Path) -> None:
    store.enqueue([new_job(i, priority=9 - n, max_retries=0 if i == "d" else 3)
                   for n, i in enumerate(["a", "r", "d", "n1", "n2"])])
    held = [claim(store) for _ in range(3)]
    count = len(lines(root))
    dones, claims = store.record_and_claim(
        [Outcome(held[0], OK), Outcome(held[1], BOOM, retry_at=T0 + 99),
         Outcome(held[2], BOOM)], T0 + 5, worker_id="w1", lease_ms=LEASE, limit=2)
    assert [j.state for j in dones if j is not None] == [
        JobState.COMPLETED, JobState.FAILED, JobState.DEAD]
    assert [c.job.id for c in claims] == ["n1", "n2"]
    [line] = lines(root)[count:]
    assert kinds(line) == ["finish", "set", "finish", "set", "set"]
    assert job_path(root, "a").exists() and job_path(root, "d").exists()
    replayed_alike(store, root)


def test_a_purge_of_many_jobs_is_one_operation(store: Ledger, root: Path) -> None:
    store.enqueue([new_job(f"j{i}") for i in range(5)])
    for _ in range(5):
        store.complete(claim(store), OK, T0 + 1)
    count = len(lines(root))
    assert len(store.purge(states=[JobState.COMPLETED])) == 5
    [line] = lines(root)[count:]
    assert kinds(line) == ["purge"] and len(line[0]["jobs"]) == 5
    assert not list((root / "jobs").rglob("*.json"))
    replayed_alike(store, root)


def test_a_released_claim_rewrites_the_record_without_its_attempt(store: Ledger,
                                                                  root: Path) -> None:
    store.enqueue([new_job("r")])
    store.fail(claim(store), BOOM, T0 + 1, T0 + 2)
    second = claim(store, T0 + 2, worker="w2")
    assert store.release(second, T0 + 3) is not None
    [put] = lines(root)[-1]
    assert put["op"] == "enqueue" and len(put["jobs"][0]["history"]) == 1
    job = store.get("r")
    assert job is not None and (job.state, job.attempts, job.worker_id) == (
        JobState.FAILED, 1, "w1")
    assert [a.outcome for a in store.attempts("r")] == ["failed"]
    replayed_alike(store, root)


def test_deleting_an_active_job_is_a_finish_and_a_purge_in_one_line(store: Ledger,
                                                                    root: Path) -> None:
    store.enqueue([new_job("a"), new_job("b")])
    a = store.get("a")
    assert a is not None
    assert raw(store).apply([Change("a", fence(a), delete=True)]) == [a]
    [line] = lines(root)[-1:]
    assert kinds(line) == ["finish", "purge"]
    assert store.get("a") is None and store.attempts("a") == []
    assert sum(store.counts().values()) == 1
    assert not job_path(root, "a").exists()
    replayed_alike(store, root)
    store.enqueue([new_job("a")])  # the id is free again
    assert [j.id for j in store.list_jobs()] == ["b", "a"]


def test_changes_to_finished_jobs_are_stored_whole(store: Ledger, root: Path) -> None:
    store.enqueue([new_job("c"), new_job("x")])
    store.complete(claim(store), OK, T0 + 1)
    store.cancel("x", T0 + 2)
    c, x = store.get("c"), store.get("x")
    assert c is not None and x is not None
    # Finished -> finished: purged and imported again, its file written after.
    [done] = raw(store).apply([Change("c", fence(c), {"priority": 7})])
    assert done is not None and done.priority == 7
    assert [kinds(line) for line in lines(root)[-2:]] == [["purge", "import"], ["imported"]]
    assert json.loads(job_path(root, "c").read_text())["priority"] == 7
    # Cancelled -> pending: purged and enqueued again, its file removed after.
    [back] = raw(store).apply([Change("x", fence(x), {"state": JobState.PENDING,
                                                      "finished_at": None})])
    assert back is not None and back.state is JobState.PENDING
    assert kinds(lines(root)[-1]) == ["purge", "enqueue"]
    assert not job_path(root, "x").exists()
    assert store.counts() == {**dict.fromkeys(JobState, 0), JobState.PENDING: 1,
                              JobState.COMPLETED: 1}
    assert claim(store, T0 + 3).job.id == "x"
    replayed_alike(store, root)


def test_one_call_sees_its_own_earlier_changes(store: Ledger, root: Path) -> None:
    store.enqueue([new_job("a", max_retries=0)])
    a = store.get("a")
    assert a is not None
    opened = Attempt(job_id="a", number=1, worker_id="w", started_at=T0)
    hold = Change("a", fence(a), {"state": JobState.PROCESSING, "claim_token": "t",
                                  "attempts": 1, "lease_expires_at": T0 + LEASE},
                  AttemptChange("t", open=opened))
    held = a.replace(state=JobState.PROCESSING, claim_token="t", attempts=1)
    die = Change("a", fence(held), {"state": JobState.DEAD, "claim_token": None,
                                    "lease_expires_at": None, "finished_at": T0 + 1},
                 AttemptChange("t", fields={"outcome": "failed", "finished_at": T0 + 1}))
    dead = held.replace(state=JobState.DEAD, claim_token=None)
    back = Change("a", fence(dead), {"state": JobState.PENDING, "attempts": 0,
                                     "finished_at": None})
    done = raw(store).apply([hold, die, back])
    assert [j.state if j else None for j in done] == [
        JobState.PROCESSING, JobState.DEAD, JobState.PENDING]
    [line] = lines(root)[-1:]
    assert kinds(line) == ["set", "finish", "revive"]
    assert not job_path(root, "a").exists(), "no file for a job that is active again"
    assert [a.outcome for a in store.attempts("a")] == ["failed"]
    assert store.counts()[JobState.DEAD] == 0
    replayed_alike(store, root)


def test_a_change_the_store_could_not_read_back_is_refused_whole(store: Ledger,
                                                                 root: Path) -> None:
    store.enqueue([new_job("a"), new_job("b")])
    a, b = store.get("a"), store.get("b")
    assert a is not None and b is not None
    before = (root / "journal-1.jsonl").read_bytes()
    fine = Change("a", fence(a), {"priority": 3})
    for bad in (Change("b", fence(b), {"priority": "high"}),
                Change("b", fence(b), {"seq": 1}),
                Change("b", fence(b), {"env": {"K": "x\x00"}}),
                Change("b", fence(b), {"claim_token": "t"})):  # a token, but not processing
        with pytest.raises(StorageError, match="cannot"):
            raw(store).apply([fine, bad])
    assert (root / "journal-1.jsonl").read_bytes() == before, "nothing of the call"
    assert store.get("a") == a
