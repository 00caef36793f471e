"""Jobs that run after others, on disk: a skipped job is finished (its own
file, counted in the snapshot), a ``dlq retry`` of its parent brings it back
into the active set with ``revive`` lines, and the children index (with the
``after`` of finished jobs kept in the snapshot) survives reopening and
compaction."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from json_store_helpers import claim, job_path, journal, journal_ops, raw

from queuectl_core.ledger import Ledger
from queuectl_core.models import JobState
from queuectl_core.testing.conformance import BOOM, OK, T0, new_job
from queuectl_json.store import JsonStorage


def children(store: Ledger, job_id: str) -> list[str]:
    return [j.id for j in raw(store).dependents(job_id)]


def seen(store: Ledger) -> dict[str, Any]:
    return {"jobs": store.list_jobs(), "counts": store.counts(),
            "children": {p: children(store, p) for p in "abcd"}}


def snapshot(root: Path) -> dict[str, Any]:
    return json.loads((root / "snapshot.json").read_text())  # type: ignore[no-any-return]


def test_a_skipped_job_rearmed_by_a_dlq_retry_survives_reopening_and_compaction(
        store: Ledger, root: Path) -> None:
    store.enqueue([new_job("a", max_retries=0), new_job("b", after=["a"]),
                   new_job("c", after=["b"]), new_job("d", after=["a"], after_mode="finished")])
    held = claim(store)
    before = journal(root).read_text().splitlines()
    store.fail(held, BOOM, T0, None)
    [line] = journal(root).read_text().splitlines()[len(before):]
    assert sorted(op["op"] for op in json.loads(line)["ops"]) == [
        "finish", "finish", "finish", "set"], "a dead, b and c skipped, d released: one line"
    assert all(job_path(root, i).exists() for i in "abc")
    counts = store.counts()
    assert (counts[JobState.SKIPPED], counts[JobState.DEAD], counts[JobState.PENDING]) == (2, 1, 1)
    skipped = seen(store)
    assert skipped["children"] == {"a": ["b", "d"], "b": ["c"], "c": [], "d": []}

    raw(store).compact()
    assert snapshot(root)["finished_after"] == {"b": ["a"], "c": ["b"]}
    assert snapshot(root)["finished"]["default"]["skipped"] == 2
    other = Ledger(JsonStorage(root, compact_bytes=1 << 30))
    assert seen(other) == skipped, "finished children are found after reopening"

    start = len(journal_ops(root))
    other.dlq_retry("a", T0 + 1)
    revived = [op for op in journal_ops(root)[start:] if op["op"] == "revive"]
    assert [(op["job"]["id"], op.get("from")) for op in revived] == [
        ("a", None), ("b", "skipped"), ("c", "skipped")]
    assert not any(job_path(root, i).exists() for i in "abc"), "active again: no files"
    rearmed = seen(store)
    assert [j.state for j in rearmed["jobs"]] == [
        JobState.PENDING, JobState.WAITING, JobState.WAITING, JobState.PENDING]
    assert rearmed["counts"][JobState.SKIPPED] == 0
    assert rearmed["children"] == skipped["children"]

    raw(other).compact()
    assert snapshot(root)["finished_after"] == {}, "b and c are active again"
    reopened = Ledger(JsonStorage(root))
    assert seen(reopened) == rearmed
    for _ in "ad":
        reopened.complete(claim(reopened, T0 + 1), OK, T0 + 2)
    assert [j.state for j in store.list_jobs() if j.id in "bc"] == [JobState.PENDING,
                                                                  JobState.WAITING]
    for s in (other, reopened):
        s.close()
