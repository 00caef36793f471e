"""Model-based test of the storage seam (queuectl_core/storage.py).

A hypothesis state machine drives one store through random sequences of
enqueue (batches, duplicates included), claim, renew, complete, fail (with
and without a retry time, following the retry rule or not), recover_expired
(charged or not, with or without a worker), dlq_retry, import_jobs,
set_setting, advancing the clock, reopening the store and switching between
two open instances of it. After every step the store must agree with a small
pure-Python model of the contract, field by field, and keep the invariants
below. Time is passed explicitly (stores never read the clock), so the model
owns the clock.

Every example gets a fresh store: a temporary directory (SQLite, JSON) or a
fresh PostgreSQL schema, removed afterwards.

Invariants checked on what the store returns (not on the model):

* a job is ``processing`` iff it has exactly one ``running`` attempt, its
  last one, numbered ``attempts``, held by the job's ``worker_id``, and then
  it has a lease; jobs in any other state have no lease and no running
  attempt;
* for a job whose history follows the contract (not imported, and every
  ``fail`` followed the retry rule ``retry iff attempts <= max_retries``),
  counted since its last ``dlq retry``: the attempts that are not
  ``interrupted`` are numbered 1..``attempts``; ``attempts <= max_retries + 1``;
  ``pending`` means ``attempts == 0``; ``failed`` means
  ``1 <= attempts <= max_retries``; ``dead`` means ``attempts > max_retries``;
* ``counts()`` agrees with ``list_jobs()`` and ``list_jobs(state)``,
  ``list_jobs(limit=n)`` is a prefix of ``list_jobs()``, and ``next_run_at()``
  is the earliest ``run_at`` among ``pending`` and ``failed`` jobs;
* every claim token is new.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)

from queuectl_core.errors import DuplicateJobError, InvalidStateError, JobNotFoundError
from queuectl_core.models import Attempt, Claim, ExecResult, Job, JobState, NewJob
from queuectl_core.storage import Storage
from queuectl_core.testing.memory import MemoryStorage

T0 = 1_800_000_000_000
#: A small id pool, so that duplicates (in a batch, against stored jobs,
#: against imported and finished jobs) are frequent.
IDS = ("a", "b", "c", "d", "e", "f", "g", "h", "naïve/ id ✓", "q'uo\"te")
MISSING = "never-stored"
WORKERS = ("w1", "w2", "w3")
LEASES = (0, 1, 5_000, 15_000)
CLAIMABLE = (JobState.PENDING, JobState.FAILED)
JOB_FIELDS = Job.field_names()
ATTEMPT_FIELDS = Attempt.field_names()

# ------------------------------------------------------------------ backends


@dataclass
class Backend:
    """One example's store: ``open`` opens it (again), ``cleanup`` removes it."""

    name: str
    persistent: bool
    open: Callable[[], Storage]
    cleanup: Callable[[], None]


BackendFactory = Callable[[], Backend]


def memory_backend() -> Backend:
    store = MemoryStorage()
    return Backend("memory", False, lambda: store, lambda: None)


def _tmp_backend(name: str, opener: Callable[[Path], Storage]) -> Backend:
    directory = Path(tempfile.mkdtemp(prefix=f"qprop-{name}-"))
    return Backend(name, True, lambda: opener(directory),
                   lambda: shutil.rmtree(directory, ignore_errors=True))


def sqlite_backend() -> Backend:
    from queuectl_sqlite.store import SqliteStorage

    return _tmp_backend("sqlite", lambda d: SqliteStorage(d / "queue.db"))


def json_backend() -> Backend:
    from queuectl_json.store import JsonStorage

    # A tiny compaction threshold, so that snapshots are rewritten (and read
    # back by the other instance) many times per example. fsync only matters
    # for power loss.
    return _tmp_backend("json", lambda d: JsonStorage(d / "json", fsync=False,
                                                      compact_bytes=4096))


def postgres_factory(dsn: str, new_schema: Callable[[], str], admin: Any) -> BackendFactory:
    from queuectl_postgres.store import PostgresStorage

    def make() -> Backend:
        schema = new_schema()
        return Backend("postgres", True, lambda: PostgresStorage(dsn, schema=schema),
                       lambda: admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))

    return make


# ------------------------------------------------------------------ the model


@dataclass
class MAttempt:
    number: int
    worker_id: str
    started_at: int
    finished_at: int | None = None
    outcome: str = "running"
    exit_code: int | None = None
    signal: int | None = None
    error: str | None = None
    #: Closed by recovery: ``error`` is the store's own text, which must
    #: name this worker (its wording is not part of the contract).
    released_from: str | None = None

    def expected(self, job_id: str) -> dict[str, Any]:
        data = {k: getattr(self, k) for k in ATTEMPT_FIELDS if k != "job_id"}
        data["job_id"] = job_id
        return data


@dataclass
class MJob:
    id: str
    command: str
    state: JobState
    attempts: int
    max_retries: int
    priority: int
    run_at: int
    created_at: int
    updated_at: int
    started_at: int | None = None
    finished_at: int | None = None
    worker_id: str | None = None
    lease_expires_at: int | None = None
    last_error: str | None = None
    exit_code: int | None = None
    #: Enqueue order (claims break ties on it; lists follow it).
    seq: int = 0
    #: The current claim's token (only while processing).
    token: str | None = None
    history: list[MAttempt] = field(default_factory=list)
    #: last_error is a recovery text that must name this worker.
    error_names: str | None = None
    #: Follows the contract's counting rules (see the module docstring).
    consistent: bool = True
    #: Index in ``history`` where the current count of attempts started.
    counted_from: int = 0

    def expected(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in JOB_FIELDS}


def assert_job(got: Job, want: MJob) -> None:
    data = got.as_dict()
    expected = want.expected()
    if want.error_names is not None:
        text = data.pop("last_error")
        expected.pop("last_error")
        assert isinstance(text, str) and want.error_names in text, (
            f"job {want.id!r}: last_error {text!r} should name worker {want.error_names!r}")
    assert data == expected, f"job {want.id!r} differs from the model"


def assert_attempts(got: Sequence[Attempt], want: MJob) -> None:
    assert len(got) == len(want.history), (
        f"job {want.id!r}: {len(got)} attempts stored, model has {len(want.history)}")
    for i, (attempt, model) in enumerate(zip(got, want.history, strict=True)):
        data = attempt.as_dict()
        expected = model.expected(want.id)
        if model.released_from is not None:
            text = data.pop("error")
            expected.pop("error")
            assert isinstance(text, str) and model.released_from in text, (
                f"job {want.id!r} attempt {i}: error {text!r} should name worker "
                f"{model.released_from!r}")
        assert data == expected, f"job {want.id!r}: attempt {i} differs from the model"


def assert_invariants(job: Job, history: Sequence[Attempt], model: MJob) -> None:
    """The contract's invariants, checked on the store's own data."""
    running = [a for a in history if a.outcome == "running"]
    if job.state is JobState.PROCESSING:
        assert len(running) == 1 and history[-1].outcome == "running", (
            f"processing job {job.id!r} needs exactly one running attempt, its last")
        current = running[0]
        assert current.number == job.attempts and current.worker_id == job.worker_id
        assert current.started_at == job.started_at
        assert job.lease_expires_at is not None and job.worker_id is not None
    else:
        assert running == [], f"{job.state.value} job {job.id!r} has a running attempt"
        assert job.lease_expires_at is None, f"{job.state.value} job {job.id!r} has a lease"
    if not model.consistent:
        return
    counted = [a.number for a in history[model.counted_from:] if a.outcome != "interrupted"]
    assert counted == list(range(1, job.attempts + 1)), (
        f"job {job.id!r}: counted attempt numbers {counted} for attempts={job.attempts}")
    assert 0 <= job.attempts <= job.max_retries + 1
    if job.state is JobState.PENDING:
        assert job.attempts == 0
    elif job.state is JobState.FAILED:
        assert 1 <= job.attempts <= job.max_retries
    elif job.state is JobState.DEAD:
        assert job.attempts > job.max_retries
    else:
        assert job.attempts >= 1


def same_json(a: Any, b: Any) -> bool:
    """Equal as JSON (so that True and 1, or 1 and 1.0, differ)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


# ------------------------------------------------------------------ strategies

texts = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"),
                max_size=12)
commands = texts.filter(lambda s: s.strip() != "")
maybe_text = st.none() | texts
exit_codes = st.none() | st.integers(-1, 255)
results = st.builds(ExecResult, exit_code=exit_codes,
                    signal=st.none() | st.sampled_from([9, 15]), error=maybe_text)
ok_results = st.just(ExecResult(exit_code=0)) | results
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=6,
)


@dataclass(frozen=True)
class NewJobArgs:
    id: str
    command: str
    max_retries: int
    priority: int
    run_offset: int


new_jobs = st.builds(NewJobArgs, id=st.sampled_from(IDS), command=commands,
                     max_retries=st.integers(0, 3), priority=st.integers(-2, 2),
                     run_offset=st.just(0) | st.integers(-5_000, 0) | st.integers(1, 20_000))


@dataclass(frozen=True)
class AttemptArgs:
    number: int
    worker_id: str
    started_offset: int
    duration: int
    outcome: str
    exit_code: int | None
    signal: int | None
    error: str | None


@dataclass(frozen=True)
class ImportArgs:
    id: str
    command: str
    state: JobState
    attempts: int
    max_retries: int
    priority: int
    run_offset: int
    created_offset: int
    started_offset: int | None
    finished_offset: int | None
    worker_id: str | None
    last_error: str | None
    exit_code: int | None
    history: tuple[AttemptArgs, ...]


attempt_args = st.builds(
    AttemptArgs, number=st.integers(1, 5), worker_id=st.sampled_from(WORKERS),
    started_offset=st.integers(-100_000, 0), duration=st.integers(0, 5_000),
    outcome=st.sampled_from(["completed", "failed", "lost", "interrupted"]),
    exit_code=exit_codes, signal=st.none() | st.just(9), error=maybe_text)

import_args = st.builds(
    ImportArgs, id=st.sampled_from(IDS), command=commands,
    state=st.sampled_from([JobState.PENDING, JobState.FAILED, JobState.COMPLETED,
                           JobState.DEAD]),
    attempts=st.integers(0, 4), max_retries=st.integers(0, 3), priority=st.integers(-2, 2),
    run_offset=st.integers(-5_000, 20_000), created_offset=st.integers(-200_000, 0),
    started_offset=st.none() | st.integers(-100_000, 0),
    finished_offset=st.none() | st.integers(-100_000, 0),
    worker_id=st.none() | st.sampled_from(WORKERS), last_error=maybe_text,
    exit_code=exit_codes, history=st.lists(attempt_args, max_size=3).map(tuple))


# ------------------------------------------------------------------ the machine


class StoreMachine(RuleBasedStateMachine):
    claims = Bundle("claims")

    def __init__(self, backend: Backend) -> None:
        super().__init__()
        self.backend = backend
        self.store = backend.open()
        # A second instance on the same data (another process's view); the
        # switch rule makes it the one used, so each must catch up with the
        # other's changes.
        self.other = backend.open() if backend.persistent else self.store
        self.now = T0
        self.jobs: dict[str, MJob] = {}  # insertion order is enqueue order
        self.next_seq = 1
        self.settings: dict[str, Any] = {}
        self.tokens: set[str] = set()

    def teardown(self) -> None:
        try:
            self.store.close()
            if self.other is not self.store:
                self.other.close()
        finally:
            self.backend.cleanup()

    # ---------------------------------------------------------- helpers
    def _add(self, job: MJob) -> None:
        job.seq = self.next_seq
        self.next_seq += 1
        self.jobs[job.id] = job

    def _holder(self, claim: Claim) -> MJob | None:
        job = self.jobs.get(claim.job.id)
        if job is None or job.state is not JobState.PROCESSING or job.token != claim.token:
            return None
        return job

    def _duplicates(self, ids: Sequence[str]) -> set[str]:
        return {i for n, i in enumerate(ids) if i in self.jobs or i in ids[:n]}

    def _close_attempt(self, job: MJob, **changes: Any) -> None:
        attempt = job.history[-1]
        assert attempt.outcome == "running"
        for key, value in changes.items():
            setattr(attempt, key, value)

    # ---------------------------------------------------------- rules
    @initialize(batch=st.lists(new_jobs, min_size=1, max_size=5, unique_by=lambda a: a.id))
    def some_jobs(self, batch: list[NewJobArgs]) -> None:
        self.enqueue(batch)

    @rule(delta=st.integers(0, 30_000))
    def advance_clock(self, delta: int) -> None:
        self.now += delta

    def _nothing_due_but_later(self) -> bool:
        waiting = [j.run_at for j in self.jobs.values() if j.state in CLAIMABLE]
        return bool(waiting) and min(waiting) > self.now

    @precondition(_nothing_due_but_later)
    @rule()
    def advance_to_next_run_at(self) -> None:
        """Exactly to the next run_at: due at that very millisecond."""
        next_run_at = self.store.next_run_at()
        assert next_run_at is not None
        self.now = next_run_at

    @precondition(lambda self: self.backend.persistent)
    @rule(reopen=st.booleans())
    def other_instance(self, reopen: bool) -> None:
        """Switch to the other open instance (it must catch up with what this
        one did), or close this one and open the store again."""
        if reopen:
            self.store.close()
            self.store = self.backend.open()
        else:
            self.store, self.other = self.other, self.store

    @rule(batch=st.lists(new_jobs, max_size=3))
    def enqueue(self, batch: list[NewJobArgs]) -> None:
        jobs = [NewJob(id=a.id, command=a.command, max_retries=a.max_retries,
                       priority=a.priority, run_at=self.now + a.run_offset, created_at=self.now)
                for a in batch]
        dups = self._duplicates([j.id for j in jobs])
        if dups:
            with pytest.raises(DuplicateJobError) as info:
                self.store.enqueue(jobs)
            assert info.value.job_id in dups
            event("enqueue: duplicate rejected")
            return
        self.store.enqueue(jobs)
        for j in jobs:
            self._add(MJob(id=j.id, command=j.command, state=JobState.PENDING, attempts=0,
                           max_retries=j.max_retries, priority=j.priority, run_at=j.run_at,
                           created_at=j.created_at, updated_at=j.created_at))

    @rule(target=claims, worker=st.sampled_from(WORKERS), lease=st.sampled_from(LEASES))
    def claim(self, worker: str, lease: int) -> Any:
        claim = self._claim(worker, lease)
        return multiple() if claim is None else claim

    @rule(worker=st.sampled_from(WORKERS), lease=st.sampled_from(LEASES),
          succeed=st.booleans(), result=results, delay=st.integers(0, 20_000))
    def run_one_job(self, worker: str, lease: int, succeed: bool, result: ExecResult,
                    delay: int) -> None:
        """What a worker does: claim, then complete or fail by the retry rule."""
        claim = self._claim(worker, lease)
        if claim is None:
            return
        if succeed:
            self._complete(claim, ExecResult(exit_code=0))
        else:
            self._fail(claim, result, follow_policy=True, delay=delay, give_retry=True)

    @rule(claim=claims, lease=st.sampled_from(LEASES))
    def renew(self, claim: Claim, lease: int) -> None:
        job = self._holder(claim)
        assert self.store.renew(claim, self.now, lease) is (job is not None)
        if job is not None:
            job.lease_expires_at = self.now + lease

    @rule(claim=claims, result=ok_results)
    def complete(self, claim: Claim, result: ExecResult) -> None:
        self._complete(claim, result)

    @rule(claim=claims, result=results, follow_policy=st.booleans(),
          delay=st.integers(-5_000, 20_000), give_retry=st.booleans())
    def fail(self, claim: Claim, result: ExecResult, follow_policy: bool, delay: int,
             give_retry: bool) -> None:
        self._fail(claim, result, follow_policy=follow_policy, delay=delay,
                   give_retry=give_retry)

    # ---------------------------------------------------------- steps shared by rules
    def _claim(self, worker: str, lease: int) -> Claim | None:
        due = [j for j in self.jobs.values() if j.state in CLAIMABLE and j.run_at <= self.now]
        claim = self.store.claim(worker, self.now, lease)
        if not due:
            assert claim is None, f"claimed {claim and claim.job.id!r}, but nothing is due"
            return None
        best = min(due, key=lambda j: (-j.priority, j.run_at, j.seq))
        event(f"claim: {len(due)} due" if len(due) < 3 else "claim: 3+ due")
        assert claim is not None, f"nothing claimed, but {best.id!r} is due"
        assert claim.job.id == best.id, f"claimed {claim.job.id!r}, expected {best.id!r}"
        assert claim.token not in self.tokens, "a claim token was handed out twice"
        self.tokens.add(claim.token)
        best.state = JobState.PROCESSING
        best.attempts += 1
        best.worker_id = worker
        best.lease_expires_at = self.now + lease
        best.started_at = self.now
        best.finished_at = None
        best.updated_at = self.now
        best.token = claim.token
        best.history.append(MAttempt(number=best.attempts, worker_id=worker,
                                     started_at=self.now))
        assert_job(claim.job, best)
        assert (claim.attempt, claim.worker_id, claim.lease_expires_at) == (
            best.attempts, worker, self.now + lease)
        return claim

    def _complete(self, claim: Claim, result: ExecResult) -> None:
        job = self._holder(claim)
        got = self.store.complete(claim, result, self.now)
        if job is None:
            assert got is None, "a stale claim completed a job (fencing)"
            event("complete: fenced out")
            return
        event("complete")
        job.state = JobState.COMPLETED
        job.last_error = None
        job.error_names = None
        job.exit_code = result.exit_code
        job.finished_at = job.updated_at = self.now
        job.lease_expires_at = None
        job.token = None
        self._close_attempt(job, finished_at=self.now, outcome="completed",
                            exit_code=result.exit_code, signal=result.signal,
                            error=result.error)
        assert got is not None
        assert_job(got, job)

    def _fail(self, claim: Claim, result: ExecResult, *, follow_policy: bool, delay: int,
              give_retry: bool) -> None:
        job = self._holder(claim)
        if job is not None and follow_policy:
            retry = job.attempts <= job.max_retries
            retry_at = self.now + max(delay, 0) if retry else None
        else:
            retry_at = self.now + delay if give_retry else None
        got = self.store.fail(claim, result, self.now, retry_at)
        if job is None:
            assert got is None, "a stale claim failed a job (fencing)"
            event("fail: fenced out")
            return
        event("fail: retry" if retry_at is not None else "fail: dead")
        if (retry_at is None) != (job.attempts > job.max_retries):
            job.consistent = False  # a retry (or a death) the retry rule would not give
        job.state = JobState.FAILED if retry_at is not None else JobState.DEAD
        if retry_at is not None:
            job.run_at = retry_at
        job.last_error = result.error
        job.error_names = None
        job.exit_code = result.exit_code
        job.finished_at = job.updated_at = self.now
        job.lease_expires_at = None
        job.token = None
        self._close_attempt(job, finished_at=self.now, outcome="failed",
                            exit_code=result.exit_code, signal=result.signal,
                            error=result.error)
        assert got is not None
        assert_job(got, job)

    # ---------------------------------------------------------- more rules
    @rule(worker=st.none() | st.sampled_from(WORKERS), charge=st.booleans())
    def recover_expired(self, worker: str | None, charge: bool) -> None:
        self._recover(worker, charge)

    def _processing(self) -> list[MJob]:
        return [j for j in self.jobs.values() if j.state is JobState.PROCESSING]

    @precondition(lambda self: bool(self._processing()))
    @rule(data=st.data(), charge=st.booleans(), by_worker=st.booleans())
    def recover_a_held_job(self, data: st.DataObject, charge: bool, by_worker: bool) -> None:
        """Release a job that is held now: by its worker's id (expired or
        not), or by moving the clock just past its lease."""
        held = data.draw(st.sampled_from(sorted(j.id for j in self._processing())),
                         label="job_id")
        job = self.jobs[held]
        if by_worker:
            self._recover(job.worker_id, charge)
        else:
            assert job.lease_expires_at is not None
            self.now = max(self.now, job.lease_expires_at + 1)
            self._recover(None, charge)

    def _recover(self, worker: str | None, charge: bool) -> None:
        got = self.store.recover_expired(self.now, worker, charge_attempt=charge)
        stale = [j for j in self.jobs.values() if j.state is JobState.PROCESSING and (
            j.worker_id == worker if worker is not None
            else j.lease_expires_at is not None and j.lease_expires_at < self.now)]
        for job in stale:
            owner = job.worker_id
            assert owner is not None
            if charge:
                outcome = "lost"
                job.state = JobState.DEAD if job.attempts > job.max_retries else JobState.FAILED
            else:
                outcome = "interrupted"
                job.attempts -= 1
                job.state = JobState.PENDING if job.attempts == 0 else JobState.FAILED
            job.run_at = self.now
            job.last_error = None
            job.error_names = owner
            job.exit_code = None
            job.finished_at = job.updated_at = self.now
            job.lease_expires_at = None
            job.token = None
            self._close_attempt(job, finished_at=self.now, outcome=outcome,
                                released_from=owner)
        if stale:
            event(f"recover: released ({'charged' if charge else 'not charged'})")
        assert sorted(j.id for j in got) == sorted(j.id for j in stale), (
            "recover_expired released other jobs than the model")
        by_id = {j.id: j for j in stale}
        for returned in got:
            assert_job(returned, by_id[returned.id])

    @precondition(lambda self: any(j.state is JobState.DEAD for j in self.jobs.values()))
    @rule(data=st.data())
    def dlq_retry_dead_job(self, data: st.DataObject) -> None:
        dead = sorted(i for i, j in self.jobs.items() if j.state is JobState.DEAD)
        self.dlq_retry(data.draw(st.sampled_from(dead), label="job_id"))

    @rule(job_id=st.sampled_from((*IDS, MISSING)))
    def dlq_retry(self, job_id: str) -> None:
        job = self.jobs.get(job_id)
        if job is None:
            with pytest.raises(JobNotFoundError):
                self.store.dlq_retry(job_id, self.now)
            return
        if job.state is not JobState.DEAD:
            with pytest.raises(InvalidStateError):
                self.store.dlq_retry(job_id, self.now)
            return
        got = self.store.dlq_retry(job_id, self.now)
        event("dlq_retry: revived")
        job.state = JobState.PENDING
        job.attempts = 0
        job.run_at = job.updated_at = self.now
        job.started_at = job.finished_at = job.exit_code = None
        job.consistent = True
        job.counted_from = len(job.history)
        assert_job(got, job)

    @rule(records=st.lists(import_args, max_size=3))
    def import_jobs(self, records: list[ImportArgs]) -> None:
        def at(offset: int | None) -> int | None:
            return None if offset is None else self.now + offset

        built: list[tuple[Job, list[Attempt]]] = []
        for r in records:
            job = Job(id=r.id, command=r.command, state=r.state, attempts=r.attempts,
                      max_retries=r.max_retries, priority=r.priority,
                      run_at=self.now + r.run_offset, created_at=self.now + r.created_offset,
                      updated_at=self.now, started_at=at(r.started_offset),
                      finished_at=at(r.finished_offset), worker_id=r.worker_id,
                      last_error=r.last_error, exit_code=r.exit_code)
            history = [Attempt(job_id=r.id, number=a.number, worker_id=a.worker_id,
                               started_at=self.now + a.started_offset,
                               finished_at=self.now + a.started_offset + a.duration,
                               outcome=a.outcome,  # type: ignore[arg-type]
                               exit_code=a.exit_code, signal=a.signal, error=a.error)
                       for a in r.history]
            built.append((job, history))
        dups = self._duplicates([job.id for job, _ in built])
        if dups:
            with pytest.raises(DuplicateJobError) as info:
                self.store.import_jobs(built)
            assert info.value.job_id in dups
            event("import: duplicate rejected")
            return
        self.store.import_jobs(built)
        if built:
            event("import: stored")
        for job, history in built:
            self._add(MJob(**job.as_dict(), consistent=False, history=[
                MAttempt(**{k: v for k, v in a.as_dict().items() if k != "job_id"})
                for a in history]))

    @rule(key=st.sampled_from(["max_retries", "backoff_base", "lease_seconds",
                               "a-future-key ✓"]), value=json_values)
    def set_setting(self, key: str, value: Any) -> None:
        self.store.set_setting(key, value)
        self.settings[key] = value

    # ---------------------------------------------------------- checks
    @invariant()
    def agrees_with_model(self) -> None:
        store = self.store
        listed = store.list_jobs()
        assert [j.id for j in listed] == list(self.jobs), "list_jobs order or content"
        for job in listed:
            model = self.jobs[job.id]
            assert_job(job, model)
            history = store.attempts(job.id)
            assert_attempts(history, model)
            assert_invariants(job, history, model)
        for job_id in (*IDS, MISSING):
            got = store.get(job_id)
            if job_id in self.jobs:
                assert got is not None, f"get({job_id!r}) found nothing"
                assert_job(got, self.jobs[job_id])
            else:
                assert got is None
        assert store.attempts(MISSING) == []
        counts = store.counts()
        assert set(counts) == set(JobState), "counts() must name every state"
        for state in JobState:
            ids = [j.id for j in self.jobs.values() if j.state is state]
            assert counts[state] == len(ids), f"counts()[{state.value}]"
            assert [j.id for j in store.list_jobs(state)] == ids, f"list_jobs({state.value})"
        assert [j.id for j in store.list_jobs(limit=2)] == list(self.jobs)[:2]
        due = [j.run_at for j in self.jobs.values() if j.state in CLAIMABLE]
        assert store.next_run_at() == (min(due) if due else None), "next_run_at()"
        assert same_json(store.get_settings(), self.settings), "get_settings()"


# ------------------------------------------------------------------ the tests

#: (max_examples, stateful_step_count) per backend: the whole file stays
#: well under 90 s with PostgreSQL on localhost.
BUDGET = {"memory": (150, 50), "sqlite": (80, 50), "json": (70, 50), "postgres": (50, 40)}


def run_machine(factory: BackendFactory, budget: tuple[int, int]) -> None:
    max_examples, steps = budget

    class Machine(StoreMachine):
        def __init__(self) -> None:
            super().__init__(factory())

    run_state_machine_as_test(
        Machine,
        settings=settings(max_examples=max_examples, stateful_step_count=steps,
                          deadline=None,
                          suppress_health_check=[HealthCheck.too_slow,
                                                 HealthCheck.filter_too_much]),
    )


@pytest.fixture
def backend_factory(request: pytest.FixtureRequest) -> Iterator[BackendFactory]:
    name = request.param
    if name == "memory":
        yield memory_backend
    elif name == "sqlite":
        yield sqlite_backend
    elif name == "json":
        yield json_backend
    else:
        dsn = request.getfixturevalue("pg_dsn")
        yield postgres_factory(dsn, request.getfixturevalue("pg_schemas"),
                               request.getfixturevalue("pg_admin"))


@pytest.mark.parametrize("backend_factory", ["memory", "sqlite", "json", "postgres"],
                         indirect=True)
def test_store_agrees_with_model(backend_factory: BackendFactory,
                                 request: pytest.FixtureRequest) -> None:
    name = request.node.callspec.params["backend_factory"]
    run_machine(backend_factory, BUDGET[name])
