"""Random graphs of jobs and random outcomes, run through the core's ledger
over each store, checked after every step against a model of the rules.

The model computes every job's state from scratch: a job that ran, was
cancelled or revived has its own state; any other job with parents is
``skipped`` if a parent rules it out (dead, cancelled or skipped under
``success``), ``waiting`` while a parent is not done (completed, or any
final state under ``finished``), and ``pending`` once released; a released
job stays released (it is not pulled back when a parent is revived). The
store's ``waiting_on`` must count exactly the parents not done.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from queuectl_core.dependencies import done_for, readiness
from queuectl_core.errors import InvalidStateError
from queuectl_core.ledger import Ledger
from queuectl_core.models import ExecResult, Job, JobState
from queuectl_core.storage import Storage
from queuectl_core.testing.kit import T0, new_job
from queuectl_core.testing.memory import MemoryStorage

LEASE = 10_000
OK = ExecResult(exit_code=0)
BOOM = ExecResult(exit_code=1, error="boom")

#: A graph: for each job (in enqueue order), its parents (earlier jobs only,
#: so there is no cycle) and its mode.
Graph = list[tuple[list[int], str]]


@st.composite
def graphs(draw: st.DrawFn) -> Graph:
    n = draw(st.integers(2, 7))
    out: Graph = []
    for i in range(n):
        parents = draw(st.lists(st.integers(0, i - 1), unique=True, max_size=3)) if i else []
        out.append((parents, draw(st.sampled_from(["success", "finished"]))))
    return out


#: Steps: ("run", ok), ("cancel", job), ("retry", job), ("enqueue_rest",).
steps = st.lists(st.one_of(
    st.tuples(st.just("run"), st.booleans()),
    st.tuples(st.just("cancel"), st.integers(0, 6)),
    st.tuples(st.just("retry"), st.integers(0, 6)),
    st.tuples(st.just("enqueue_rest")),
), max_size=14)


class Model:
    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.own: dict[int, JobState] = {}  # ran, cancelled, revived, released
        self.stored: list[int] = []
        #: run_at of jobs a dlq retry moved (the rest: T0). Claims go by run_at,
        #: then enqueue order.
        self.run_at: dict[int, int] = {}

    def state(self, i: int, memo: dict[int, JobState]) -> JobState:
        if i in memo:
            return memo[i]
        parents, mode = self.graph[i]
        if i in self.own or not parents:
            result = self.own.get(i, JobState.PENDING)
        else:
            fake = [Job.new(id=str(p), command="x", max_retries=0, run_at=T0, created_at=T0
                            ).replace(state=self.state(p, memo)) for p in parents]
            result, _, _ = readiness(mode, fake)
            if result is JobState.PENDING:
                self.own[i] = JobState.PENDING  # released: stays released
        memo[i] = result
        return result

    def states(self) -> dict[int, JobState]:
        memo: dict[int, JobState] = {}
        return {i: self.state(i, memo) for i in self.stored}

    def waiting_on(self, i: int) -> int:
        parents, mode = self.graph[i]
        states = self.states()
        return sum(not done_for(mode, states[p]) for p in parents)


def _opener(kind: str, directory: Path) -> Callable[[], Storage]:
    if kind == "sqlite":
        from queuectl_sqlite.store import SqliteStorage

        return lambda: SqliteStorage(directory / "queue.db")
    if kind == "json":
        from queuectl_json.store import JsonStorage

        return lambda: JsonStorage(directory / "json", fsync=False, compact_bytes=4096)
    memory = MemoryStorage()
    return lambda: memory


@pytest.fixture(params=["memory", "sqlite", "json"])
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    yield request.param


def _job(i: int, graph: Graph) -> Job:
    parents, mode = graph[i]
    return new_job(f"j{i}", max_retries=0, after=[f"j{p}" for p in parents] or None,
                   after_mode=mode if parents else None)


def _check(ledger: Ledger, model: Model) -> None:
    want = model.states()
    got = {i: ledger.get(f"j{i}") for i in model.stored}
    assert {i: j.state if j else None for i, j in got.items()} == want
    for i, job in got.items():
        assert job is not None
        if job.state is JobState.WAITING:
            assert job.waiting_on == model.waiting_on(i), f"j{i} counts its parents wrong"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(graph=graphs(), plan=steps, split=st.integers(1, 7))
def test_random_graphs_and_outcomes_follow_the_rules(backend: str, graph: Graph,
                                                      plan: list[tuple[object, ...]],
                                                      split: int) -> None:
    directory = Path(tempfile.mkdtemp(prefix="qgraph-"))
    ledger = Ledger(_opener(backend, directory)())
    try:
        model = Model(graph)
        first = list(range(min(split, len(graph))))
        # Children before their parents in the batch: order must not matter.
        ledger.enqueue([_job(i, graph) for i in reversed(first)])
        model.stored = list(reversed(first))  # enqueue order
        _check(ledger, model)
        now = T0
        for step in plan:
            now += 1
            _step(ledger, model, graph, step, now)
            _check(ledger, model)
    finally:
        ledger.close()
        shutil.rmtree(directory, ignore_errors=True)


def _step(ledger: Ledger, model: Model, graph: Graph, step: tuple[object, ...], now: int
          ) -> None:
    kind = step[0]
    if kind == "enqueue_rest":
        rest = [i for i in range(len(graph)) if i not in model.stored]
        if rest:
            ledger.enqueue([_job(i, graph) for i in rest])
            model.stored += rest
    elif kind == "run":
        claim = ledger.claim("w1", now, LEASE)
        states = model.states()
        due = sorted((i for i in model.stored if states[i] is JobState.PENDING),
                     key=lambda i: model.run_at.get(i, T0))  # stable: enqueue order
        assert (claim.job.id if claim else None) == (f"j{due[0]}" if due else None)
        if claim is not None:
            i = int(claim.job.id[1:])
            if step[1]:
                ledger.complete(claim, OK, now)
            else:
                ledger.fail(claim, BOOM, now, None)
            model.own[i] = JobState.COMPLETED if step[1] else JobState.DEAD
    elif kind in ("cancel", "retry"):
        i = int(step[1])  # type: ignore[call-overload]
        if i not in model.stored:
            return
        state = model.states()[i]
        try:
            if kind == "cancel":
                ledger.cancel(f"j{i}", now)
            else:
                ledger.dlq_retry(f"j{i}", now)
        except InvalidStateError:
            allowed = (JobState.PENDING, JobState.WAITING) if kind == "cancel" \
                else (JobState.DEAD,)
            assert state not in allowed
            return
        model.own[i] = JobState.CANCELLED if kind == "cancel" else JobState.PENDING
        if kind == "retry":
            model.run_at[i] = now
