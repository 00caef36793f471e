"""What several of the JSON store's test files share (the fixtures
``root`` and ``store`` are in conftest.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from queuectl_core.ledger import Ledger
from queuectl_core.models import Attempt, Claim, Job, JobState
from queuectl_core.testing.conformance import BOOM, LEASE, OK, T0, new_job
from queuectl_json.store import JsonStorage, job_file_name

FINISHED = (JobState.COMPLETED, JobState.DEAD, JobState.CANCELLED, JobState.SKIPPED)


Exported = list[tuple[Job, list[Attempt]]]


def raw(store: Ledger) -> JsonStorage:
    assert isinstance(store.store, JsonStorage)
    return store.store


def claim(store: Ledger, now: int = T0, worker: str = "w1") -> Claim:
    got = store.claim(worker, now, LEASE)
    assert got is not None
    return got


def journal(root: Path) -> Path:
    [path] = root.glob("journal-*.jsonl")
    return path


def journal_ops(root: Path) -> list[dict[str, Any]]:
    return [op for path in sorted(root.glob("journal-*.jsonl"))
            for line in path.read_text().splitlines() for op in json.loads(line)["ops"]]


def job_path(root: Path, job_id: str) -> Path:
    name = job_file_name(job_id)
    return root / "jobs" / name[:2] / name


def finish_some(store: Ledger) -> None:
    """a: completed, b: dead, c: failed (retry later), d: processing, e: pending."""
    store.enqueue([new_job(n, max_retries=0 if n == "b" else 3) for n in "abcde"])
    store.complete(claim(store), OK, T0 + 1)
    store.fail(claim(store), BOOM, T0 + 1, None)
    store.fail(claim(store), BOOM, T0 + 1, T0 + 500)
    claim(store, worker="w2")
