"""The conformance kit, run against backends that break its promises, fails
with the values involved: a plugin author reads what went wrong without a
debugger. The broken backends are real (MemoryStorage with one rule
bent, and a file store with no lock shared by real processes), run by a
real pytest in a subprocess, as an author would run the kit."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from queuectl_core.testing.kit import claim_problems

BROKEN_STORES = '''
import os
import pickle
from pathlib import Path

from queuectl_core.storage import Storage
from queuectl_core.testing import MemoryStorage, StorageConformance


class TiesById(MemoryStorage):
    """Breaks ties in claim order by id instead of enqueue order."""

    def due(self, now, queues=None, limit=1):
        jobs = super().due(now, queues, 10**9)
        return sorted(jobs, key=lambda j: (-j.priority, j.run_at, j.id))[:limit]


class Unlocked(MemoryStorage):
    """MemoryStorage kept in a file, read and written around each call with
    no lock: processes claiming at once take the same jobs."""

    def __init__(self, path):
        super().__init__()
        self._path = path
        if path.exists():
            self.__dict__.update(pickle.loads(path.read_bytes()))

    def _load(self):
        if self._path.exists():
            self.__dict__.update(pickle.loads(self._path.read_bytes()))

    def _save(self):
        state = {k: v for k, v in self.__dict__.items() if k not in ("_lock", "_path")}
        tmp = self._path.with_name(f"{self._path.name}.{os.getpid()}")
        tmp.write_bytes(pickle.dumps(state))
        os.replace(tmp, self._path)  # whole files, but no lock around read-change-write

    def insert(self, records):
        self._load()
        super().insert(records)
        self._save()

    def due(self, now, queues=None, limit=1):
        self._load()
        return super().due(now, queues, limit)

    def apply(self, changes):
        self._load()
        done = super().apply(changes)
        self._save()
        return done

    def list_jobs(self, state=None, limit=None, *, queue=None):
        self._load()
        return super().list_jobs(state, limit, queue=queue)

    def attempts(self, job_id):
        self._load()
        return super().attempts(job_id)


class TestTiesById(StorageConformance):
    persistent = False
    supports_processes = False

    def open_storage(self, home: Path) -> Storage:
        return TiesById()


class TestUnlocked(StorageConformance):
    def open_storage(self, home: Path) -> Storage:
        return Unlocked(home / "queue.pickle")
'''


def run_kit(tmp_path: Path, test: str) -> str:
    (tmp_path / "test_broken_store.py").write_text(textwrap.dedent(BROKEN_STORES))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
         f"test_broken_store.py::{test}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    return proc.stdout


def test_claim_order_failure_shows_the_order_claimed_and_expected(tmp_path: Path) -> None:
    out = run_kit(tmp_path, "TestTiesById::test_claim_order_priority_then_fifo")
    assert "claim order: priority, then run_at, then enqueue order" in out
    assert "assert ['a-high', 'y" in out  # the order the store gave (rewritten assert)
    assert "== ['y-high', 'a" in out  # and the one expected


def test_racy_claims_are_reported_with_the_ids_claimed_twice(tmp_path: Path) -> None:
    out = run_kit(tmp_path,
                  "TestUnlocked::test_concurrent_claims_across_processes_never_duplicate")
    assert "claims from 6 processes:" in out, out
    assert "claimed more than once (j0" in out, out


def test_claim_problems_names_duplicates_lost_and_unknown_ids() -> None:
    jobs = [f"j{i}" for i in range(14)]
    claimed = ["j0", "j0", "j0", "j1", "j1", *[f"j{i}" for i in range(2, 12)], "zz"]
    assert claim_problems(jobs, claimed) == (
        "2 claimed more than once (j0 x3, j1 x2); 2 never claimed (j12, j13); "
        "1 claims of no such job (zz)")
    many = [f"j{i}" for i in range(14)]
    assert claim_problems(many, []).startswith(
        "14 never claimed (j0, j1, j2, j3, j4, j5, j6, j7, j8, j9 and 4 more")
    assert claim_problems(jobs, jobs) == ""
