"""Shared pieces of the conformance kit: the fixed clock, job builders and
the base class with the fixtures (see :mod:`queuectl_core.testing.conformance`)."""

from __future__ import annotations

import multiprocessing
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..ledger import Ledger
from ..models import Claim, ExecResult, Job, Outcome
from ..storage import Storage

T0 = 1_800_000_000_000  # a fixed "now" (epoch ms) for deterministic tests
LEASE = 10_000
OK = ExecResult(exit_code=0)
BOOM = ExecResult(exit_code=3, error="boom")


def new_job(job_id: str, *, priority: int = 0, run_at: int = T0, created_at: int = T0,
            max_retries: int = 3, command: str | None = None, queue: str = "default",
            **extra: object) -> Job:
    return Job.new(id=job_id, command=command or f"echo {job_id}", max_retries=max_retries,
                   priority=priority, run_at=run_at, created_at=created_at, queue=queue,
                   **extra)  # type: ignore[arg-type]


def claim_problems(jobs: list[str], claimed: list[str]) -> str:
    """What went wrong when ``claimed`` (every claim made, in any order)
    should take each of ``jobs`` exactly once: the ids claimed twice or
    more, those never claimed and those that are no job; "" if nothing."""
    seen = Counter(claimed)
    parts = []
    if twice := sorted(j for j, n in seen.items() if n > 1):
        parts.append(f"{len(twice)} claimed more than once ({_some(twice, seen)})")
    if lost := [j for j in jobs if j not in seen]:
        parts.append(f"{len(lost)} never claimed ({_some(lost)})")
    known = set(jobs)
    if strange := sorted(j for j in seen if j not in known):
        parts.append(f"{len(strange)} claims of no such job ({_some(strange)})")
    return "; ".join(parts)


def _some(ids: list[str], times: Counter[str] | None = None) -> str:
    shown = [f"{i} x{times[i]}" if times else i for i in ids[:10]]
    return ", ".join(shown) + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")


def _record_one(store: Ledger, claim: Claim, result: ExecResult, now: int, *,
                retry_at: int | None = None, worker_id: str = "w1",
                queues: list[str] | None = None) -> tuple[Job | None, Claim | None]:
    """Record one result and claim the next job in the same call."""
    [done], claims = store.record_and_claim([Outcome(claim, result, retry_at)], now,
                                            worker_id=worker_id, lease_ms=LEASE,
                                            queues=queues, limit=1)
    return done, claims[0] if claims else None


def _claim_in_child(opener: KitBase, home: Path, worker: str,
                    queue: multiprocessing.Queue[list[str]]) -> None:
    store = opener.open_storage(home)
    got: list[str] = []
    try:
        while claims := store.claim(worker, T0 + 1, LEASE, None, 1 + len(got) % 3):
            got.extend(claim.job.id for claim in claims)
    finally:
        store.close()
        queue.put(got)


class KitBase:
    """The fixtures and helpers every part of the kit uses."""

    supports_processes = True
    persistent = True
    #: A name unique to the running test (and to this run of the suite),
    #: set before the store is opened: what a server-backed store keys its
    #: data by (a key prefix, a schema), so that tests never see each
    #: other's jobs nor an earlier run's. Letters, digits and ``_`` only.
    namespace = ""

    def open_storage(self, home: Path) -> Storage:
        """Open (creating if needed) the store kept under ``home`` (a new
        temporary directory per test) or, for a store on a server, under
        ``self.namespace``. Called once per test and again to check
        persistence or from child processes; every call in one test must
        see the same data (unless ``persistent`` is False)."""
        raise NotImplementedError

    def drop_storage(self, home: Path) -> None:
        """Delete what the test stored, after its stores are closed (even
        when it failed). Override for a store on a server (drop the
        namespace's keys, schema or tables); files under ``home`` are
        pytest's to clean."""

    @pytest.fixture
    def home(self, tmp_path: Path) -> Iterator[Path]:
        self.namespace = f"qk_{uuid.uuid4().hex[:20]}"
        yield tmp_path
        # Fixtures that need ``home`` (the store) are closed before this.
        self.drop_storage(tmp_path)

    @pytest.fixture
    def store(self, home: Path) -> Iterator[Ledger]:
        """The store under test, through the core's :class:`Ledger`: the
        tests below check that the store keeps what the core decides."""
        store = Ledger(self.open_storage(home))
        yield store
        store.close()

    @pytest.fixture
    def raw(self, store: Ledger) -> Storage:
        """The same store, for the tests of the seam itself."""
        return store.store

    def reopen(self, store: Ledger, home: Path) -> Ledger:
        if not self.persistent:
            pytest.skip("store is not persistent")
        store.close()
        return Ledger(self.open_storage(home))

    def claim(self, store: Ledger, now: int = T0, worker: str = "w1") -> Claim:
        claim = store.claim(worker, now, LEASE)
        assert claim is not None, "expected a job to be claimable"
        return claim
