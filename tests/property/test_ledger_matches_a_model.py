"""Model-based test of the Ledger over each store: the core's decisions
(queuectl_core/transitions.py, made by queuectl_core/ledger.py) kept by each
backend behind the thin storage seam (queuectl_core/storage.py).

A hypothesis state machine drives one store, through a Ledger, with random
sequences of enqueue (batches, duplicates included; named queues, timeouts,
working directories, Unicode environments and retry overrides), claim (from
every queue or from a list of queues), renew, complete, fail (with and
without a retry time, following the retry rule or not; with output tails),
record_and_claim (batches of results, then claims), release (a claim given
back unstarted), recover_expired (charged or not, with or without a worker),
cancel (of waiting, running, finished and missing jobs; a running job may be
cancelled while a worker holds it), purge (by state, age, id and limit;
forbidden states included), pausing and resuming queues, dlq_retry,
import_jobs (cancelled jobs and attempts included; jobs exported while
running, which arrive with their attempt lost), set_setting, advancing
the clock, reopening the store and switching between two open instances of
it. After every step the store
must agree with a small pure-Python model of the contract, field by field
(the internal ``claim_token`` included), and keep the invariants below. The
model restates the state machine's rules (what ``last_error`` and
``exit_code`` become on each transition, whether cancelling a waiting job
sets ``cancel_requested_at``, ...) independently of transitions.py. Time is
passed explicitly (stores never read the clock), so the model owns the
clock.

Every example gets a fresh store: a temporary directory (SQLite, JSON) or a
fresh PostgreSQL schema, removed afterwards.

Invariants checked on what the store returns (not on the model):

* a job is ``processing`` iff it has exactly one ``running`` attempt, its
  last one, held by the job's ``worker_id``, and then it has a lease and a
  claim token; jobs in any other state have no lease, no claim token and no
  running attempt;
* attempt numbers name a run in the job's whole history: the attempt a claim
  opens is numbered one more than the job's attempt records before it
  (``Claim.attempt`` is that number), so for a job never imported the numbers
  are 1..n in order, across ``dlq retry`` and forced stops;
* for a job whose history follows the contract (not imported, and every
  ``fail`` followed the retry rule ``retry iff attempts <= max_retries``),
  counted since its last ``dlq retry``: the attempts that count (all but those
  given back by an uncharged recovery: ``interrupted``, or ``cancelled`` by
  one) number ``attempts``; ``attempts <= max_retries + 1``; ``pending``
  means ``attempts == 0``; ``failed`` means ``1 <= attempts <= max_retries``;
  ``dead`` means ``attempts > max_retries``;
* for a job never imported: only a ``processing``, ``completed`` or
  ``cancelled`` job has ``cancel_requested_at``; a ``cancelled`` job has it
  and ``finished_at``; only the last attempt of a ``cancelled`` job can be
  ``cancelled``;
* ``counts()`` and ``counts(queue)`` agree with ``list_jobs()``,
  ``list_jobs(state)`` and ``list_jobs(queue=...)``; ``list_jobs(state, limit,
  queue=...)`` is the filtered prefix; ``next_run_at(queues)`` is the earliest
  ``run_at`` among ``pending`` and ``failed`` jobs in those queues that are
  not paused; ``paused_queues()`` is sorted;
* every claim token is new.

``test_the_model_catches_broken_stores`` runs the machine (briefly,
derandomized) against deliberately broken memory stores and ledgers, to show
that it notices.
"""

from __future__ import annotations

import itertools
import json
import math
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, event, settings
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
from queuectl_core.ledger import Ledger
from queuectl_core.limits import DEFAULT_QUEUE, MAX_TIMEOUT_SECONDS
from queuectl_core.models import (
    FINISHED_STATES,
    Attempt,
    Change,
    Claim,
    ExecResult,
    Job,
    JobState,
    Outcome,
    job_problem,
)
from queuectl_core.settings import SETTING_SPECS
from queuectl_core.storage import Storage, new_token
from queuectl_core.testing.memory import MemoryStorage
from queuectl_core.timeutil import now_ms
from queuectl_core.transitions import (
    CANCELLED_ERROR,
    INTERRUPTED_ATTEMPT_ERROR,
    LOST_ATTEMPT_ERROR,
    claimed,
)

T0 = 1_800_000_000_000
#: The error ``import`` records on the attempt of a job exported while it ran.
MOVED_ERROR = "exported while running; the attempt was lost in the move"
#: A small id pool, so that duplicates (in a batch, against stored jobs,
#: against imported and finished jobs) are frequent.
IDS = ("a", "b", "c", "d", "e", "f", "g", "h", "naïve/ id ✓", "q'uo\"te")
MISSING = "never-stored"
WORKERS = ("w1", "w2", "w3")
LEASES = (0, 1, 5_000, 15_000)
#: Queues jobs go to (``default`` first: the default), and one that never has
#: jobs but may be paused, named in a claim's queues, or counted.
QUEUES = (DEFAULT_QUEUE, "a", "Z.9-x")
EMPTY_QUEUE = "nobody"
ALL_QUEUES = (*QUEUES, EMPTY_QUEUE)
CLAIMABLE = (JobState.PENDING, JobState.FAILED)
JOB_FIELDS = Job.field_names()
ATTEMPT_FIELDS = Attempt.field_names()
#: Job fields whose types are compared too (see ``shape``).
TYPED_FIELDS = ("timeout", "env", "retry")

# ------------------------------------------------------------------ backends


@dataclass
class Backend:
    """One example's store: ``open`` opens it (again), ``cleanup`` removes it.
    The machine drives it through ``ledger`` (the core's :class:`Ledger`, or
    a deliberately broken one)."""

    name: str
    persistent: bool
    open: Callable[[], Storage]
    cleanup: Callable[[], None]
    ledger: type[Ledger] = Ledger

    def open_ledger(self) -> Ledger:
        return self.ledger(self.open())


BackendFactory = Callable[[], Backend]


def memory_backend(cls: type[MemoryStorage] = MemoryStorage,
                   ledger: type[Ledger] = Ledger) -> Backend:
    store = cls()
    return Backend("memory", False, lambda: store, lambda: None, ledger)


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
    stdout_tail: str | None = None
    stderr_tail: str | None = None
    #: Model only: an uncharged recovery gave it back (it does not count).
    given_back: bool = False

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
    queue: str = DEFAULT_QUEUE
    timeout: float | None = None
    cwd: str | None = None
    env: dict[str, str] | None = None
    retry: dict[str, Any] | None = None
    cancel_requested_at: int | None = None
    # Dependencies, limits and unique keys (never used here: the graph has
    # its own model, tests/property/test_graph_matches_a_model.py).
    after: list[str] | None = None
    after_mode: str | None = None
    concurrency_key: str | None = None
    unique_key: str | None = None
    waiting_on: int = 0
    dependents: int = 0
    schedule: str | None = None
    scheduled_for: int | None = None
    #: The current claim's token (only while processing).
    claim_token: str | None = None
    # ---- model only
    #: Enqueue order (claims break ties on it; lists follow it).
    seq: int = 0
    history: list[MAttempt] = field(default_factory=list)
    #: Follows the contract's counting rules (see the module docstring).
    consistent: bool = True
    #: Index in ``history`` where the current count of attempts started.
    counted_from: int = 0
    #: Came from import_jobs (its fields and history are arbitrary).
    imported: bool = False

    def expected(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in JOB_FIELDS}

    @property
    def finished_or_updated(self) -> int:
        """What purge's ``finished_before`` and its order look at."""
        return self.finished_at if self.finished_at is not None else self.updated_at


def assert_job(got: Job, want: MJob) -> None:
    data = got.as_dict()
    expected = want.expected()
    assert data == expected, f"job {want.id!r} differs from the model"
    for key in TYPED_FIELDS:
        assert shape(data[key]) == shape(expected[key]), (
            f"job {want.id!r}: {key} {data[key]!r} should be {expected[key]!r} (types differ)")


def assert_attempts(got: Sequence[Attempt], want: MJob) -> None:
    assert len(got) == len(want.history), (
        f"job {want.id!r}: {len(got)} attempts stored, model has {len(want.history)}")
    for i, (attempt, model) in enumerate(zip(got, want.history, strict=True)):
        assert attempt.as_dict() == model.expected(want.id), (
            f"job {want.id!r}: attempt {i} differs from the model")


def assert_invariants(job: Job, history: Sequence[Attempt], model: MJob) -> None:
    """The contract's invariants, checked on the store's own data (``model``
    only says which rules apply, and which attempts were given back)."""
    running = [a for a in history if a.outcome == "running"]
    if job.state is JobState.PROCESSING:
        assert len(running) == 1 and history[-1].outcome == "running", (
            f"processing job {job.id!r} needs exactly one running attempt, its last")
        current = history[-1]
        assert current.number == len(history), (
            f"job {job.id!r}: the running attempt is number {current.number}, but it is "
            f"attempt {len(history)} of the job's history")
        assert current.worker_id == job.worker_id and current.started_at == job.started_at
        assert job.lease_expires_at is not None and job.worker_id is not None
        assert job.claim_token is not None, f"processing job {job.id!r} has no claim token"
        assert job.attempts >= 1
    else:
        assert running == [], f"{job.state.value} job {job.id!r} has a running attempt"
        assert job.lease_expires_at is None, f"{job.state.value} job {job.id!r} has a lease"
        assert job.claim_token is None, f"{job.state.value} job {job.id!r} has a claim token"
    if not model.imported:
        numbers = [a.number for a in history]
        assert numbers == list(range(1, len(history) + 1)), (
            f"job {job.id!r}: attempt numbers {numbers}")
        if job.cancel_requested_at is not None:
            assert job.state in (JobState.PROCESSING, JobState.COMPLETED, JobState.CANCELLED), (
                f"{job.state.value} job {job.id!r} has cancel_requested_at")
        if job.state is JobState.CANCELLED:
            assert job.cancel_requested_at is not None and job.finished_at is not None
        cancelled = [i for i, a in enumerate(history) if a.outcome == "cancelled"]
        assert cancelled in ([], [len(history) - 1]), (
            f"job {job.id!r}: cancelled attempts at {cancelled}")
        assert not cancelled or job.state is JobState.CANCELLED, (
            f"{job.state.value} job {job.id!r} ends with a cancelled attempt")
    if not model.consistent:
        return
    since = zip(history[model.counted_from:], model.history[model.counted_from:], strict=True)
    counted = [a for a, m in since if not (
        a.outcome == "interrupted" or (a.outcome == "cancelled" and m.given_back))]
    assert len(counted) == job.attempts, (
        f"job {job.id!r}: {len(counted)} counted attempts, attempts={job.attempts}")
    assert 0 <= job.attempts <= job.max_retries + 1
    if job.state is JobState.PENDING:
        assert job.attempts == 0
    elif job.state is JobState.FAILED:
        assert 1 <= job.attempts <= job.max_retries
    elif job.state is JobState.DEAD:
        assert job.attempts > job.max_retries
    elif job.state in (JobState.PROCESSING, JobState.COMPLETED):
        assert job.attempts >= 1


def shape(value: Any) -> Any:
    """The types in a field value (None, a float, or a dict's values), so
    that 1 and 1.0, or {} and None, differ."""
    if isinstance(value, dict):
        return sorted((k, type(v)) for k, v in value.items())
    return type(value)


def same_json(a: Any, b: Any) -> bool:
    """Equal as JSON (so that True and 1, or 1 and 1.0, differ)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


# ------------------------------------------------------------------ strategies

_chars = st.characters(exclude_categories=["Cs"], exclude_characters="\x00")
texts = st.text(_chars, max_size=12)
commands = texts.filter(lambda s: s.strip() != "")
maybe_text = st.none() | texts
exit_codes = st.none() | st.integers(-1, 255)
#: Output tails: absent, empty (they differ) or any text.
tails = st.none() | st.just("") | texts
results = st.builds(ExecResult, exit_code=exit_codes,
                    signal=st.none() | st.sampled_from([9, 15]), error=maybe_text,
                    stdout_tail=tails, stderr_tail=tails)
ok_results = st.builds(ExecResult, exit_code=st.just(0), stdout_tail=tails,
                       stderr_tail=tails) | results
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=6,
)
queue_names = st.sampled_from(QUEUES)
#: A claim's queues: None (any queue), or a list (maybe empty, with repeats,
#: naming a queue without jobs).
queue_filters = st.none() | st.lists(st.sampled_from(ALL_QUEUES), max_size=3)
#: Timeouts: whole seconds are the common case (``"timeout": 30`` is stored as 30.0).
timeouts = (st.none() | st.sampled_from([1.0, 30.0, 0.25, MAX_TIMEOUT_SECONDS])
            | st.floats(0, MAX_TIMEOUT_SECONDS, exclude_min=True))
cwds = st.none() | st.text(_chars, min_size=1, max_size=12)
envs = st.none() | st.dictionaries(
    st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00="),
            min_size=1, max_size=6),
    texts, max_size=3)


def _number(key: str) -> st.SearchStrategy[int | float]:
    """Any value the retry setting ``key`` accepts, as an int or a float."""
    spec = SETTING_SPECS[key]
    ints: st.SearchStrategy[int | float] = st.integers(math.ceil(spec.low),
                                                       math.floor(spec.high))
    return ints | st.floats(spec.low, spec.high)


retries = st.none() | st.fixed_dictionaries({}, optional={
    "policy": st.sampled_from(["exponential", "linear", "fixed", "my.policy-2"]),
    "backoff_base": _number("backoff_base"), "max_delay": _number("max_delay"),
    "jitter": _number("jitter")})


@dataclass(frozen=True)
class NewJobArgs:
    id: str
    command: str
    max_retries: int
    priority: int
    run_offset: int
    queue: str
    timeout: float | None
    cwd: str | None
    env: dict[str, str] | None
    retry: dict[str, Any] | None


new_jobs = st.builds(NewJobArgs, id=st.sampled_from(IDS), command=commands,
                     max_retries=st.integers(0, 3), priority=st.integers(-2, 2),
                     run_offset=st.just(0) | st.integers(-5_000, 0) | st.integers(1, 20_000),
                     queue=queue_names, timeout=timeouts, cwd=cwds, env=envs, retry=retries)


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
    stdout_tail: str | None
    stderr_tail: str | None


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
    queue: str
    timeout: float | None
    cwd: str | None
    env: dict[str, str] | None
    retry: dict[str, Any] | None
    cancel_offset: int | None
    history: tuple[AttemptArgs, ...]


attempt_args = st.builds(
    AttemptArgs, number=st.integers(1, 5), worker_id=st.sampled_from(WORKERS),
    started_offset=st.integers(-100_000, 0), duration=st.integers(0, 5_000),
    outcome=st.sampled_from(["completed", "failed", "lost", "interrupted", "cancelled",
                             "running"]),
    exit_code=exit_codes, signal=st.none() | st.just(9), error=maybe_text,
    stdout_tail=tails, stderr_tail=tails)

import_args = st.builds(
    ImportArgs, id=st.sampled_from(IDS), command=commands,
    state=st.sampled_from(list(JobState)),
    attempts=st.integers(0, 4), max_retries=st.integers(0, 3), priority=st.integers(-2, 2),
    run_offset=st.integers(-5_000, 20_000), created_offset=st.integers(-200_000, 0),
    started_offset=st.none() | st.integers(-100_000, 0),
    finished_offset=st.none() | st.integers(-100_000, 0),
    worker_id=st.none() | st.sampled_from(WORKERS), last_error=maybe_text,
    exit_code=exit_codes, queue=queue_names, timeout=timeouts, cwd=cwds, env=envs,
    retry=retries, cancel_offset=st.none() | st.integers(-100_000, 0),
    history=st.lists(attempt_args, max_size=3).map(tuple))

#: list_jobs filters checked in turn, one per step: (state, queue, limit).
#: Each example starts at a place it draws.
LIST_FILTERS = list(itertools.product((None, *JobState), (None, *ALL_QUEUES), (None, 0, 1, 2)))
#: next_run_at filters checked in turn, one per step (besides None).
NEXT_RUN_FILTERS: list[list[str]] = [
    [], *([q] for q in ALL_QUEUES), list(QUEUES[1:]), [QUEUES[0], EMPTY_QUEUE, QUEUES[0]]]


# ------------------------------------------------------------------ the machine


class StoreMachine(RuleBasedStateMachine):
    claims = Bundle("claims")

    def __init__(self, backend: Backend) -> None:
        super().__init__()
        self.backend = backend
        self.store = backend.open_ledger()
        # A second instance on the same data (another process's view); the
        # switch rule makes it the one used, so each must catch up with the
        # other's changes.
        self.other = backend.open_ledger() if backend.persistent else self.store
        self.now = T0
        self.jobs: dict[str, MJob] = {}  # insertion order is enqueue order
        self.next_seq = 1
        self.settings: dict[str, Any] = {}
        self.paused: set[str] = set()
        self.tokens: set[str] = set()
        #: Ids purge deleted (they may come back).
        self.purged: set[str] = set()
        self.checks = 0

    def teardown(self) -> None:
        try:
            self.store.close()
            if self.other is not self.store:
                self.other.close()
        finally:
            self.backend.cleanup()

    # ---------------------------------------------------------- helpers
    def _add(self, job: MJob) -> None:
        problem = job_problem(Job(**job.expected()))
        assert problem is None, f"the test generated an invalid job: {problem}"
        job.seq = self.next_seq
        self.next_seq += 1
        self.jobs[job.id] = job
        if job.id in self.purged:
            event("enqueue/import: a purged id again")

    def _holder(self, claim: Claim) -> MJob | None:
        job = self.jobs.get(claim.job.id)
        if (job is None or job.state is not JobState.PROCESSING
                or job.claim_token != claim.token):
            return None
        return job

    def _duplicates(self, ids: Sequence[str]) -> set[str]:
        return {i for n, i in enumerate(ids) if i in self.jobs or i in ids[:n]}

    def _claimable(self, queues: Sequence[str] | None) -> list[MJob]:
        return [j for j in self.jobs.values()
                if j.state in CLAIMABLE and j.queue not in self.paused
                and (queues is None or j.queue in queues)]

    def _close_attempt(self, job: MJob, **changes: Any) -> None:
        attempt = job.history[-1]
        assert attempt.outcome == "running"
        for key, value in changes.items():
            setattr(attempt, key, value)

    def _in_state(self, *states: JobState) -> list[str]:
        return sorted(i for i, j in self.jobs.items() if j.state in states)

    # ---------------------------------------------------------- rules
    @initialize(batch=st.lists(new_jobs, min_size=1, max_size=5, unique_by=lambda a: a.id),
                rotation=st.integers(0, len(LIST_FILTERS) * len(NEXT_RUN_FILTERS)))
    def some_jobs(self, batch: list[NewJobArgs], rotation: int) -> None:
        self.checks = rotation  # where this example starts in the filters checked in turn
        self.enqueue(batch)

    @rule(delta=st.integers(0, 30_000))
    def advance_clock(self, delta: int) -> None:
        self.now += delta

    def _nothing_due_but_later(self) -> bool:
        waiting = [j.run_at for j in self._claimable(None)]
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
            self.store = self.backend.open_ledger()
        else:
            self.store, self.other = self.other, self.store

    @rule(batch=st.lists(new_jobs, max_size=3))
    def enqueue(self, batch: list[NewJobArgs]) -> None:
        jobs = [Job.new(id=a.id, command=a.command, max_retries=a.max_retries,
                        priority=a.priority, run_at=self.now + a.run_offset,
                        created_at=self.now, queue=a.queue, timeout=a.timeout, cwd=a.cwd,
                        env=a.env, retry=a.retry)
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
                           created_at=j.created_at, updated_at=j.created_at, queue=j.queue,
                           timeout=j.timeout, cwd=j.cwd, env=j.env, retry=j.retry))
            assert_job(j, self.jobs[j.id])  # Job.new makes a pending job

    @rule(target=claims, worker=st.sampled_from(WORKERS), lease=st.sampled_from(LEASES),
          queues=queue_filters)
    def claim(self, worker: str, lease: int, queues: list[str] | None) -> Any:
        claim = self._claim(worker, lease, queues)
        return multiple() if claim is None else claim

    @rule(worker=st.sampled_from(WORKERS), lease=st.sampled_from(LEASES),
          queues=queue_filters, cancel=st.sampled_from([False, False, False, True]),
          succeed=st.booleans(), result=results, delay=st.integers(0, 20_000))
    def run_one_job(self, worker: str, lease: int, queues: list[str] | None, cancel: bool,
                    succeed: bool, result: ExecResult, delay: int) -> None:
        """What a worker does: claim, then complete or fail by the retry rule;
        sometimes someone cancels the job while it runs."""
        claim = self._claim(worker, lease, queues)
        if claim is None:
            return
        if cancel:
            self._cancel(claim.job.id)
        if succeed:
            self._complete(claim, result.replace(exit_code=0, signal=None, error=None))
        else:
            self._fail(claim, result, follow_policy=True, delay=delay, give_retry=True)

    @rule(claim=claims, lease=st.sampled_from(LEASES))
    def renew(self, claim: Claim, lease: int) -> None:
        job = self._holder(claim)
        got = self.store.renew(claim, self.now, lease)
        if job is None:
            assert got is None, "a stale claim renewed a lease (fencing)"
            event("renew: fenced out")
            return
        event("renew")
        job.lease_expires_at = self.now + lease
        assert got is not None, "the holder's renewal was refused"
        assert_job(got, job)

    @rule(claim=claims)
    def release(self, claim: Claim) -> None:
        """Give back a claim as if it had not been made."""
        job = self._holder(claim)
        got = self.store.release(claim, self.now)
        if job is None:
            assert got is None, "a stale claim was released (fencing)"
            event("release: fenced out")
            return
        opened = job.history.pop()
        assert opened.outcome == "running"
        job.attempts -= 1
        before = job.history[-1] if job.history else None
        job.worker_id = before.worker_id if before else None
        job.started_at = before.started_at if before and job.attempts else None
        job.finished_at = before.finished_at if before and job.attempts else None
        job.state = JobState.PENDING if job.attempts == 0 else JobState.FAILED
        if job.cancel_requested_at is not None:
            event("release: cancelled")
            job.state, job.finished_at, job.last_error = (JobState.CANCELLED, self.now,
                                                          CANCELLED_ERROR)
        else:
            event(f"release: {job.state.value}")
        job.updated_at = self.now
        job.lease_expires_at = None
        job.claim_token = None
        assert got is not None
        assert_job(got, job)

    @rule(queues=queue_filters, limit=st.integers(1, 4))
    def due_count(self, queues: list[str] | None, limit: int) -> None:
        got = self.store.due_count(self.now, queues, limit)
        due = [j for j in self._claimable(queues) if j.run_at <= self.now]
        assert got == min(limit, len(due)), f"due_count {got}, expected min({limit}, {len(due)})"

    @rule(claim=claims, result=ok_results)
    def complete(self, claim: Claim, result: ExecResult) -> None:
        self._complete(claim, result)

    @rule(claim=claims, result=results, follow_policy=st.booleans(),
          delay=st.integers(-5_000, 20_000), give_retry=st.booleans())
    def fail(self, claim: Claim, result: ExecResult, follow_policy: bool, delay: int,
             give_retry: bool) -> None:
        self._fail(claim, result, follow_policy=follow_policy, delay=delay,
                   give_retry=give_retry)

    @rule(target=claims, outcomes=st.lists(
              st.tuples(claims, results, st.booleans(), st.integers(0, 20_000)), max_size=3),
          worker=st.sampled_from(WORKERS), lease=st.sampled_from(LEASES),
          queues=queue_filters, limit=st.integers(0, 3))
    def record_and_claim(self, outcomes: list[tuple[Claim, ExecResult, bool, int]],
                         worker: str, lease: int, queues: list[str] | None, limit: int) -> Any:
        """A busy worker's batch: several results in order, then claims."""
        batch = [Outcome(claim, result.replace(exit_code=0, signal=None, error=None))
                 if succeed else
                 Outcome(claim, result, self._retry_at(claim, follow_policy=True, delay=delay,
                                                       give_retry=True))
                 for claim, result, succeed, delay in outcomes]
        dones, got = self.store.record_and_claim(batch, self.now, worker_id=worker,
                                                 lease_ms=lease, queues=queues, limit=limit)
        assert len(dones) == len(batch) and len(got) <= limit
        event(f"record_and_claim: {len(batch)} result(s), {len(got)} of {limit} claim(s)")
        for outcome, done in zip(batch, dones, strict=True):
            if outcome.completed:
                self._check_complete(outcome.claim, outcome.result, done)
            else:
                self._check_fail(outcome.claim, outcome.result, outcome.retry_at, done)
        made = []
        for i in range(limit):
            claim = self._check_claim(worker, lease, queues, got[i] if i < len(got) else None)
            if claim is None:
                break
            made.append(claim)
        return multiple(*made)

    # ---------------------------------------------------------- steps shared by rules
    def _claim(self, worker: str, lease: int, queues: list[str] | None) -> Claim | None:
        return self._check_claim(worker, lease, queues,
                                 self.store.claim(worker, self.now, lease, queues))

    def _check_claim(self, worker: str, lease: int, queues: list[str] | None,
                     claim: Claim | None) -> Claim | None:
        """Check a claim the store made (None: it found nothing) and apply
        it to the model."""
        due = [j for j in self._claimable(queues) if j.run_at <= self.now]
        if not due:
            assert claim is None, f"claimed {claim and claim.job.id!r}, but nothing is due"
            return None
        best = min(due, key=lambda j: (-j.priority, j.run_at, j.seq))
        event(f"claim: {len(due)} due" if len(due) < 3 else "claim: 3+ due")
        if queues is not None:
            event("claim: from listed queues")
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
        best.claim_token = claim.token
        best.history.append(MAttempt(number=len(best.history) + 1, worker_id=worker,
                                     started_at=self.now))
        if len(best.history) > best.attempts:
            event("claim: attempt number above the retry count")
        assert_job(claim.job, best)
        assert (claim.attempt, claim.worker_id, claim.lease_expires_at) == (
            len(best.history), worker, self.now + lease), "Claim fields"
        return claim

    def _finish(self, job: MJob, result: ExecResult, state: JobState, outcome: str,
                retry_at: int | None = None) -> None:
        """complete() and fail() of a job held by the claim."""
        job.state = state
        if retry_at is not None:
            job.run_at = retry_at
        job.last_error = None if state is JobState.COMPLETED else result.error
        job.exit_code = result.exit_code
        job.finished_at = job.updated_at = self.now
        job.lease_expires_at = None
        job.claim_token = None
        self._close_attempt(job, finished_at=self.now, outcome=outcome,
                            exit_code=result.exit_code, signal=result.signal,
                            error=result.error, stdout_tail=result.stdout_tail,
                            stderr_tail=result.stderr_tail)

    def _complete(self, claim: Claim, result: ExecResult) -> None:
        self._check_complete(claim, result, self.store.complete(claim, result, self.now))

    def _check_complete(self, claim: Claim, result: ExecResult, got: Job | None) -> None:
        job = self._holder(claim)
        if job is None:
            assert got is None, "a stale claim completed a job (fencing)"
            event("complete: fenced out")
            return
        event("complete" if job.cancel_requested_at is None
              else "complete: although cancel requested")
        self._finish(job, result, JobState.COMPLETED, "completed")
        assert got is not None
        assert_job(got, job)

    def _retry_at(self, claim: Claim, *, follow_policy: bool, delay: int,
                  give_retry: bool) -> int | None:
        job = self._holder(claim)
        if job is not None and follow_policy:
            retry = job.attempts <= job.max_retries
            return self.now + max(delay, 0) if retry else None
        return self.now + delay if give_retry else None

    def _fail(self, claim: Claim, result: ExecResult, *, follow_policy: bool, delay: int,
              give_retry: bool) -> None:
        retry_at = self._retry_at(claim, follow_policy=follow_policy, delay=delay,
                                  give_retry=give_retry)
        self._check_fail(claim, result, retry_at,
                         self.store.fail(claim, result, self.now, retry_at))

    def _check_fail(self, claim: Claim, result: ExecResult, retry_at: int | None,
                    got: Job | None) -> None:
        job = self._holder(claim)
        if job is None:
            assert got is None, "a stale claim failed a job (fencing)"
            event("fail: fenced out")
            return
        if job.cancel_requested_at is not None:
            event("fail: cancelled" + (" (instead of a retry)" if retry_at is not None else ""))
            self._finish(job, result, JobState.CANCELLED, "cancelled")
        else:
            event("fail: retry" if retry_at is not None else "fail: dead")
            if (retry_at is None) != (job.attempts > job.max_retries):
                job.consistent = False  # a retry (or a death) the retry rule would not give
            self._finish(job, result, JobState.FAILED if retry_at is not None else JobState.DEAD,
                         "failed", retry_at)
        assert got is not None
        assert_job(got, job)

    # ---------------------------------------------------------- more rules
    @rule(worker=st.none() | st.sampled_from(WORKERS), charge=st.booleans())
    def recover_expired(self, worker: str | None, charge: bool) -> None:
        self._recover(worker, charge)

    @precondition(lambda self: bool(self._in_state(JobState.PROCESSING)))
    @rule(data=st.data(), charge=st.booleans(), by_worker=st.booleans())
    def recover_a_held_job(self, data: st.DataObject, charge: bool, by_worker: bool) -> None:
        """Release a job that is held now: by its worker's id (expired or
        not), or by moving the clock just past its lease."""
        held = data.draw(st.sampled_from(self._in_state(JobState.PROCESSING)), label="job_id")
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
            if charge:
                outcome, error = "lost", LOST_ATTEMPT_ERROR.format(worker=job.worker_id)
                job.state = JobState.DEAD if job.attempts > job.max_retries else JobState.FAILED
            else:
                outcome = "interrupted"
                error = INTERRUPTED_ATTEMPT_ERROR.format(worker=job.worker_id)
                job.attempts -= 1
                job.state = JobState.PENDING if job.attempts == 0 else JobState.FAILED
            if job.cancel_requested_at is not None:
                job.state, outcome = JobState.CANCELLED, "cancelled"
            event(f"recover: {outcome} ({'charged' if charge else 'not charged'})")
            job.run_at = self.now
            job.last_error = error
            job.exit_code = None
            job.finished_at = job.updated_at = self.now
            job.lease_expires_at = None
            job.claim_token = None
            self._close_attempt(job, finished_at=self.now, outcome=outcome, error=error,
                                given_back=not charge)
        assert sorted(j.id for j in got) == sorted(j.id for j in stale), (
            "recover_expired released other jobs than the model")
        by_id = {j.id: j for j in stale}
        for returned in got:
            assert_job(returned, by_id[returned.id])

    @precondition(lambda self: bool(self._in_state(JobState.DEAD)))
    @rule(data=st.data())
    def dlq_retry_dead_job(self, data: st.DataObject) -> None:
        self.dlq_retry(data.draw(st.sampled_from(self._in_state(JobState.DEAD)),
                                 label="job_id"))

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

    @rule(job_id=st.sampled_from((*IDS, MISSING)))
    def cancel(self, job_id: str) -> None:
        self._cancel(job_id)

    @precondition(lambda self: bool(self._in_state(JobState.PROCESSING)))
    @rule(data=st.data(), later=st.integers(0, 1_000))
    def cancel_running_job(self, data: st.DataObject, later: int) -> None:
        """Ask a running job to stop (its worker notices it later), a little
        later than the last step (so that asking twice is told apart)."""
        self.now += later
        self._cancel(data.draw(st.sampled_from(self._in_state(JobState.PROCESSING)),
                               label="job_id"))

    def _cancel(self, job_id: str) -> None:
        job = self.jobs.get(job_id)
        if job is None:
            with pytest.raises(JobNotFoundError):
                self.store.cancel(job_id, self.now)
            return
        if job.state in FINISHED_STATES:
            with pytest.raises(InvalidStateError):
                self.store.cancel(job_id, self.now)
            event(f"cancel: {job.state.value} refused")
            return
        got = self.store.cancel(job_id, self.now)
        if job.state is JobState.PROCESSING:
            if job.cancel_requested_at is None:
                event("cancel: requested")
                job.cancel_requested_at = job.updated_at = self.now
            else:
                event("cancel: requested again")
        else:
            event(f"cancel: {job.state.value} cancelled")
            job.state = JobState.CANCELLED
            job.finished_at = job.updated_at = job.cancel_requested_at = self.now
            job.last_error = CANCELLED_ERROR
        assert_job(got, job)

    @rule(queue=st.sampled_from(ALL_QUEUES), paused=st.booleans())
    def pause_queue(self, queue: str, paused: bool) -> None:
        changed = (queue in self.paused) != paused
        assert self.store.set_queue_paused(queue, paused) is changed, (
            f"set_queue_paused({queue!r}, {paused}) should return {changed}")
        if paused:
            self.paused.add(queue)
        else:
            self.paused.discard(queue)

    @precondition(lambda self: bool(self._in_state(*FINISHED_STATES)))
    @rule(data=st.data())
    def purge(self, data: st.DataObject) -> None:
        states = data.draw(st.lists(st.sampled_from(FINISHED_STATES), min_size=1, max_size=3)
                           | st.lists(st.sampled_from(list(JobState)), max_size=3),
                           label="states")
        # The times purge looks at, and just after them, so that "earlier
        # than" is tested at its edge.
        times = sorted({self.jobs[i].finished_or_updated + d
                        for i in self._in_state(*FINISHED_STATES) for d in (0, 1)})
        finished_before = data.draw(st.none() | st.sampled_from(times), label="finished_before")
        ids = data.draw(st.none() | st.lists(st.sampled_from(
            (*self._in_state(*FINISHED_STATES), *IDS, MISSING)), max_size=4), label="ids")
        limit = data.draw(st.none() | st.integers(0, 3), label="limit")
        if any(s not in FINISHED_STATES for s in states):
            with pytest.raises(ValueError):
                self.store.purge(states=states, finished_before=finished_before, ids=ids,
                                 limit=limit)
            event("purge: refused")
            return
        found = sorted((j for j in self.jobs.values()
                        if j.state in states and (ids is None or j.id in ids)
                        and (finished_before is None
                             or j.finished_or_updated < finished_before)),
                       key=lambda j: (j.finished_or_updated, j.seq))
        gone = [j.id for j in (found if limit is None else found[:limit])]
        got = self.store.purge(states=states, finished_before=finished_before, ids=ids,
                               limit=limit)
        event("purge: some" if gone else "purge: none")
        assert got == gone, f"purge deleted {got}, expected {gone} (in this order)"
        for job_id in gone:
            del self.jobs[job_id]
        self.purged.update(gone)

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
                      last_error=r.last_error, exit_code=r.exit_code, queue=r.queue,
                      timeout=r.timeout, cwd=r.cwd, env=r.env, retry=r.retry,
                      cancel_requested_at=at(r.cancel_offset),
                      lease_expires_at=self.now + 5_000 if r.state is JobState.PROCESSING
                      else None)
            history = [Attempt(job_id=r.id, number=a.number, worker_id=a.worker_id,
                               started_at=self.now + a.started_offset,
                               finished_at=None if a.outcome == "running"
                               else self.now + a.started_offset + a.duration,
                               outcome=a.outcome,  # type: ignore[arg-type]
                               exit_code=a.exit_code, signal=a.signal, error=a.error,
                               stdout_tail=a.stdout_tail, stderr_tail=a.stderr_tail)
                       for a in r.history]
            built.append((job, history))
        dups = self._duplicates([job.id for job, _ in built])
        if dups:
            with pytest.raises(DuplicateJobError) as info:
                self.store.import_jobs(built)
            assert info.value.job_id in dups
            event("import: duplicate rejected")
            return
        before = now_ms()
        self.store.import_jobs(built)
        after = now_ms()
        if built:
            event("import: stored")
        for job, history in built:
            model = MJob(**job.as_dict(), consistent=False, imported=True, history=[
                MAttempt(**{k: v for k, v in a.as_dict().items() if k != "job_id"})
                for a in history])
            if job.state is JobState.PROCESSING or any(a.outcome == "running"
                                                       for a in history):
                self._settle_import(model, self._settled_at(job, history, before, after))
            self._add(model)

    def _settled_at(self, job: Job, history: list[Attempt], before: int, after: int) -> int:
        """When the import settled ``job`` (the ledger stamps it with the
        time of the import: it must be within the call)."""
        stored = self.store.get(job.id)
        assert stored is not None
        if job.state is JobState.PROCESSING:
            at = stored.finished_at
        else:
            first = next(i for i, a in enumerate(history) if a.outcome == "running")
            at = self.store.attempts(job.id)[first].finished_at
        assert at is not None and before <= at <= after, (
            f"import settled job {job.id!r} at {at}, not during the call ({before}..{after})")
        return at

    def _settle_import(self, job: MJob, at: int) -> None:
        """A job exported while it ran arrives without its worker: its
        attempt was lost in the move, charged (dead if it was its last;
        cancelled if a cancel was requested). No attempt stays running."""
        closed = {"finished_at": at, "outcome": "lost", "error": MOVED_ERROR}
        if job.state is JobState.PROCESSING:
            if job.cancel_requested_at is not None:
                job.state, closed["outcome"] = JobState.CANCELLED, "cancelled"
            else:
                job.state = (JobState.DEAD if job.attempts > job.max_retries
                             else JobState.FAILED)
            event(f"import: a running job arrives {job.state.value}")
            job.run_at = job.finished_at = job.updated_at = at
            job.last_error = MOVED_ERROR
            job.exit_code = job.lease_expires_at = job.claim_token = None
        else:
            event("import: a running attempt of a waiting or finished job")
        for attempt in job.history:
            if attempt.outcome == "running":
                for key, value in closed.items():
                    setattr(attempt, key, value)

    @rule(key=st.sampled_from(["max_retries", "backoff_base", "lease_seconds",
                               "a-future-key ✓"]), value=json_values)
    def set_setting(self, key: str, value: Any) -> None:
        self.store.set_setting(key, value)
        self.settings[key] = value

    # ---------------------------------------------------------- checks
    @invariant()
    def agrees_with_model(self) -> None:
        store = self.store
        self.checks += 1
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

        def ids(state: JobState | None = None, queue: str | None = None) -> list[str]:
            return [j.id for j in self.jobs.values()
                    if (state is None or j.state is state) and (queue is None or j.queue == queue)]

        for queue in (None, *ALL_QUEUES):
            counts = store.counts(queue)
            assert counts == {s: len(ids(s, queue)) for s in JobState}, f"counts({queue!r})"
        for state in JobState:
            assert [j.id for j in store.list_jobs(state)] == ids(state), (
                f"list_jobs({state.value})")
        for queue in ALL_QUEUES:
            assert [j.id for j in store.list_jobs(queue=queue)] == ids(queue=queue), (
                f"list_jobs(queue={queue!r})")
        state, queue, limit = LIST_FILTERS[self.checks % len(LIST_FILTERS)]
        assert [j.id for j in store.list_jobs(state, limit, queue=queue)] == (
            ids(state, queue)[:limit]), f"list_jobs({state}, {limit}, queue={queue!r})"
        for queues in (None, NEXT_RUN_FILTERS[self.checks % len(NEXT_RUN_FILTERS)]):
            due = [j.run_at for j in self._claimable(queues)]
            assert store.next_run_at(queues) == (min(due) if due else None), (
                f"next_run_at({queues})")
        assert store.paused_queues() == sorted(self.paused), "paused_queues()"
        assert same_json(store.get_settings(), self.settings), "get_settings()"


# ------------------------------------------------------------------ the tests

#: (max_examples, stateful_step_count) per backend: the whole file stays
#: well under a minute with PostgreSQL on localhost. The rules themselves are
#: checked exhaustively in tests/unit/test_transitions.py and on every store
#: by the conformance kit; this run looks for what they miss. (The memory
#: store also runs the derandomized SHORT_RUN below, 120 more examples.)
BUDGET = {"memory": (60, 50), "sqlite": (50, 40), "json": (45, 40), "postgres": (20, 40)}


#: The derandomized run that must catch every broken store below (the last
#: of them is caught at about the 100th example) and that the reference
#: ledger must pass: the control of the same length.
SHORT_RUN = (120, 50)


def run_machine(factory: BackendFactory, budget: tuple[int, int], **options: Any) -> None:
    max_examples, steps = budget

    class Machine(StoreMachine):
        def __init__(self) -> None:
            super().__init__(factory())

    run_state_machine_as_test(
        Machine,
        settings=settings(max_examples=max_examples, stateful_step_count=steps,
                          deadline=None,
                          suppress_health_check=[HealthCheck.too_slow,
                                                 HealthCheck.filter_too_much],
                          **options),
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
def test_the_ledger_over_each_store_agrees_with_the_model(backend_factory: BackendFactory,
                                                          request: pytest.FixtureRequest
                                                          ) -> None:
    name = request.node.callspec.params["backend_factory"]
    run_machine(backend_factory, BUDGET[name])


# ------------------------------------------------------------------ broken stores
#
# Each breaks one promise of the seam (a store) or one rule of the state
# machine (a ledger); the machine must notice (briefly: derandomized, no
# shrinking, so that this costs a few seconds).


class ClaimsPausedQueues(MemoryStorage):
    """``due`` offers jobs of paused queues."""

    def due(self, now: int, queues: Sequence[str] | None = None, limit: int = 1) -> list[Job]:
        paused, self._paused = self._paused, set()
        try:
            return super().due(now, queues, limit)
        finally:
            self._paused = paused


class WakesForPausedQueues(MemoryStorage):
    def next_run_at(self, queues: Sequence[str] | None = None) -> int | None:
        due = [j.run_at for j in self._jobs.values() if j.state in CLAIMABLE
               and (queues is None or j.queue in queues)]
        return min(due) if due else None


class IgnoresTheFence(MemoryStorage):
    """Makes every change, whatever the job looks like now (no
    compare-and-set): a stale claim's result, renewal or release lands."""

    def apply(self, changes: Sequence[Change], *, atomic: bool = False) -> list[Job | None]:
        return super().apply([Change(c.job_id, {}, c.fields, c.attempt, c.delete)
                              if c.job_id in self._jobs else c for c in changes], atomic=atomic)


class ForgetsCancelRequests(MemoryStorage):
    """Does not keep a cancel requested of a running job (so a recovery or
    a failure that follows does not cancel it)."""

    def apply(self, changes: Sequence[Change], *, atomic: bool = False) -> list[Job | None]:
        kept = []
        for c in changes:
            job = self._jobs.get(c.job_id)
            if (job is not None and job.state is JobState.PROCESSING
                    and set(c.fields) == {"cancel_requested_at", "updated_at"}):
                c = Change(c.job_id, c.expect, {"updated_at": c.fields["updated_at"]},
                           c.attempt, c.delete)
            kept.append(c)
        return super().apply(kept, atomic=atomic)


class NumbersAttemptsByRetryCount(MemoryStorage):
    """Numbers attempts as before the seam changed: ``job.attempts``."""

    def claim(self, worker_id: str, now: int, lease_ms: int,
              queues: Sequence[str] | None = None, limit: int = 1) -> list[Claim]:
        made: list[Claim] = []
        for job in self.due(now, queues, limit):
            change = claimed(job, worker_id=worker_id, token=new_token(), now=now,
                             lease_ms=lease_ms, number=job.attempts + 1)
            [got] = self.apply([change])
            if got is not None:
                assert change.attempt is not None
                made.append(Claim(got, change.attempt.token, worker_id, job.attempts + 1,
                                  now + lease_ms))
        return made


class PurgesTheEdge(MemoryStorage):
    """Takes ``finished_before`` as "at or before"."""

    def finished(self, states: Sequence[JobState], before: int | None = None,
                 limit: int | None = None) -> list[Job]:
        return super().finished(states, None if before is None else before + 1, limit)


class KeepsPartOfABatch(MemoryStorage):
    """Stores the jobs of a batch before the duplicate it meets."""

    def insert(self, records: Sequence[tuple[Job, Sequence[Attempt]]],
               changes: Sequence[Change] = ()) -> None:
        for record in records:
            super().insert([record], changes)


class ReturnsTheJobAsRead(MemoryStorage):
    """``apply`` returns each job as it was before the change."""

    def apply(self, changes: Sequence[Change], *, atomic: bool = False) -> list[Job | None]:
        before = [self._jobs.get(c.job_id) for c in changes]
        done = super().apply(changes, atomic=atomic)
        return [old if new is not None else None for old, new in zip(before, done, strict=True)]


class RetriesCancelledFailures(Ledger):
    """A ledger that retries a failure although a cancel was requested."""

    def record_and_claim(self, outcomes: Sequence[Outcome], now: int, *, worker_id: str,
                         lease_ms: int, queues: Sequence[str] | None = None, limit: int = 1
                         ) -> tuple[list[Job | None], list[Claim]]:
        done, claims = super().record_and_claim(outcomes, now, worker_id=worker_id,
                                                lease_ms=lease_ms, queues=queues, limit=limit)
        for i, (outcome, job) in enumerate(zip(outcomes, done, strict=True)):
            if job is not None and job.state is JobState.CANCELLED and outcome.retry_at:
                [done[i]] = self.store.apply([Change(job.id, {"state": JobState.CANCELLED}, {
                    "state": JobState.FAILED, "run_at": outcome.retry_at})])
        return done, claims


class MovesCancelRequest(Ledger):
    """A ledger where asking again moves ``cancel_requested_at``."""

    def cancel(self, job_id: str, now: int) -> Job:
        job = self.get(job_id)
        if job is not None and job.state is JobState.PROCESSING:
            self.store.apply([Change(job_id, {}, {"cancel_requested_at": None})])
        return super().cancel(job_id, now)


@pytest.mark.parametrize("broken", [
    ClaimsPausedQueues, WakesForPausedQueues, IgnoresTheFence, ForgetsCancelRequests,
    NumbersAttemptsByRetryCount, PurgesTheEdge, KeepsPartOfABatch, ReturnsTheJobAsRead,
    RetriesCancelledFailures, MovesCancelRequest,
], ids=lambda cls: cls.__name__)
def test_the_model_catches_broken_stores(broken: type[MemoryStorage] | type[Ledger]) -> None:
    if issubclass(broken, Ledger):
        factory: BackendFactory = lambda: memory_backend(ledger=broken)  # noqa: E731
    else:
        factory = lambda: memory_backend(broken)  # noqa: E731
    with pytest.raises(AssertionError):
        run_machine(factory, SHORT_RUN, derandomize=True, database=None,
                    phases=[Phase.generate], report_multiple_bugs=False, print_blob=False)


def test_the_reference_ledger_passes_the_short_run() -> None:
    """The broken variants above fail for their breakage, not for the short
    derandomized run itself."""
    run_machine(memory_backend, SHORT_RUN, derandomize=True, database=None,
                phases=[Phase.generate], report_multiple_bugs=False, print_blob=False)


# ------------------------------------------------------------------ single cases
#
# The smallest cases of rules the machine checks, as plain tests: each fails
# on its own, with its own message, if the rule breaks.


def _ledger_with(*ids: str) -> Ledger:
    ledger = Ledger(MemoryStorage())
    ledger.enqueue([Job.new(id=i, command="true", max_retries=3, run_at=T0, created_at=T0)
                    for i in ids])
    return ledger


@pytest.mark.parametrize("result", [ExecResult(), ExecResult(exit_code=3, error="boom"),
                                    ExecResult(exit_code=0, signal=9)],
                         ids=["no exit code", "exit 3", "exit 0 and a signal"])
def test_complete_records_the_job_completed_whatever_the_result(result: ExecResult) -> None:
    """``complete`` says the command succeeded: the job is completed and
    the result's fields are recorded (Storage.complete's contract, which the
    Ledger keeps under the same name and signature)."""
    ledger = _ledger_with("a")
    claim = ledger.claim("w1", T0, 5_000)
    assert claim is not None
    done = ledger.complete(claim, result, T0 + 1)
    assert done is not None and done.state is JobState.COMPLETED, (
        f"complete() left the job {done and done.state.value}")
    [attempt] = ledger.attempts("a")
    assert (attempt.outcome, attempt.exit_code, attempt.signal) == (
        "completed", result.exit_code, result.signal)


@pytest.mark.parametrize("retry_at", [T0 + 100, None])
def test_fail_never_records_the_job_completed(retry_at: int | None) -> None:
    """``fail`` says the command failed, whatever its exit code: the job
    runs again at ``retry_at``, or is dead."""
    ledger = _ledger_with("a")
    claim = ledger.claim("w1", T0, 5_000)
    assert claim is not None
    done = ledger.fail(claim, ExecResult(exit_code=0), T0 + 1, retry_at)
    want = JobState.FAILED if retry_at is not None else JobState.DEAD
    assert done is not None and done.state is want, (
        f"fail() left the job {done and done.state.value}")
    assert [a.outcome for a in ledger.attempts("a")] == ["failed"]


def test_purge_by_id_takes_ties_in_enqueue_order() -> None:
    """Oldest first, ties in enqueue order, also when ids are listed (in
    any order): with a limit, that decides which of the tied jobs go."""
    ledger = _ledger_with("a", "b", "c")
    for job_id in ("a", "b", "c"):
        ledger.cancel(job_id, T0 + 5)  # all three finish at the same time
    assert ledger.purge(states=[JobState.CANCELLED], ids=["c", "b", "a"], limit=2) == [
        "a", "b"]
    assert ledger.purge(states=[JobState.CANCELLED], ids=["c"]) == ["c"]
