"""How the SQLite store's hot queries run: their plans use the partial
indexes, and the work a claim, ``next_run_at`` or a retention purge does
stays flat while finished jobs, a paused queue's backlog and other queues'
backlogs pile up. Work is counted in SQLite VM instructions (a progress
handler), not in seconds, so these checks are deterministic."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from queuectl_core.ledger import Ledger
from queuectl_core.models import JobState
from queuectl_sqlite.sql import (
    CLAIM_LISTED_SQL,
    CLAIM_SQL,
    EXPIRED_SQL,
    FINISHED_BEFORE_SQL,
    NEXT_RUN_AT_LISTED_SQL,
    NEXT_RUN_AT_SQL,
    OPEN_ATTEMPTS_SQL,
    claim_batch_sql,
)
from queuectl_sqlite.store import SqliteStorage

T0 = 1_800_000_000_000
LEASE = 10_000
CLAIM_PARAMS = {"worker": "w", "token": "t", "lease": T0 + LEASE, "now": T0}


def plan(store: SqliteStorage, sql: str, params: dict[str, Any]) -> list[str]:
    """EXPLAIN QUERY PLAN, one line per step, indented by depth."""
    depth: dict[int, int] = {0: -1}
    lines = []
    for node, parent, _, detail in store.conn.execute(f"EXPLAIN QUERY PLAN {sql}", params):
        depth[node] = depth.get(parent, -1) + 1
        lines.append("  " * depth[node] + str(detail))
    return lines


def assert_no_table_scan(lines: list[str]) -> None:
    for line in lines:
        step = line.strip()
        assert not (step.startswith("SCAN jobs") and "INDEX" not in step), "\n".join(lines)
        assert not step.startswith("SCAN attempts"), "\n".join(lines)


def test_claim_seeks_each_open_queue_in_the_ready_index(tmp_path: Path) -> None:
    store = SqliteStorage(tmp_path / "q.db")
    try:
        for sql, params in ((CLAIM_SQL, CLAIM_PARAMS),
                            (CLAIM_LISTED_SQL, {**CLAIM_PARAMS, "queues": '["a", "b"]'})):
            lines = plan(store, sql, params)
            text = "\n".join(lines)
            assert "SEARCH jobs USING INDEX jobs_ready (queue=?)" in text, text
            assert "paused_queues" in text, text
            assert_no_table_scan(lines)
            # The one sort is the final pick among the candidates, one per queue.
            assert sum("TEMP B-TREE FOR ORDER BY" in line for line in lines) == 1, text
    finally:
        store.close()


def test_a_batch_claim_seeks_its_queue_in_the_ready_index(tmp_path: Path) -> None:
    store = SqliteStorage(tmp_path / "q.db")
    try:
        lines = plan(store, claim_batch_sql(1), {**CLAIM_PARAMS, "prefix": "p", "q0": "a",
                                              "limit": 3})
        # In the index's order: no sort, and it stops after :limit rows.
        assert "SEARCH jobs USING INDEX jobs_ready (queue=?)" in "\n".join(lines), lines
        assert not any("TEMP B-TREE" in line for line in lines), lines
        assert_no_table_scan(lines)
        lines = plan(store, OPEN_ATTEMPTS_SQL, {"worker": "w", "now": T0, "seqs": "[1, 2]"})
        assert "SEARCH a USING COVERING INDEX attempts_job (job_id=?)" in "\n".join(lines), lines
        assert_no_table_scan(lines)
    finally:
        store.close()


def test_a_batch_claim_over_several_queues_seeks_each_in_the_ready_index(
        tmp_path: Path) -> None:
    store = SqliteStorage(tmp_path / "q.db")
    try:
        lines = plan(store, claim_batch_sql(3), {**CLAIM_PARAMS, "prefix": "p", "q0": "a",
                                                 "q1": "b", "q2": "c", "limit": 3})
        text = "\n".join(lines)
        # :limit rows from each queue in index order; only those are sorted.
        assert text.count("SEARCH jobs USING INDEX jobs_ready (queue=?)") == 3, lines
        assert sum("TEMP B-TREE" in line for line in lines) == 1, lines
        assert_no_table_scan(lines)
    finally:
        store.close()


def test_next_run_at_and_purge_plans_use_their_indexes(tmp_path: Path) -> None:
    store = SqliteStorage(tmp_path / "q.db")
    try:
        for sql, params in ((NEXT_RUN_AT_SQL, {}), (NEXT_RUN_AT_LISTED_SQL, {"queues": '["a"]'})):
            lines = plan(store, sql, params)
            assert "SEARCH jobs USING INDEX jobs_due (queue=?)" in "\n".join(lines)
            assert_no_table_scan(lines)
            assert not any("TEMP B-TREE FOR ORDER BY" in line for line in lines)
        lines = plan(store, FINISHED_BEFORE_SQL, {"state": "completed", "before": T0,
                                                  "limit": 10})
        assert lines == ["SEARCH jobs USING INDEX jobs_finished (state=? AND <expr><?)"], lines
        lines = plan(store, EXPIRED_SQL, {"now": T0})  # (only expired leases are sorted)
        assert lines[0] == "SEARCH jobs USING INDEX jobs_leases (lease_expires_at<?)", lines
    finally:
        store.close()


# ------------------------------------------------------------------ cost


def seed(store: SqliteStorage, n: int, prefix: str, state: str, *, queue: str = "default",
         priority: int = 0, run_at: int = T0, done: int | None = None) -> None:
    """Store ``n`` jobs in one statement (finished ones with one attempt)."""
    with store.conn:
        store.conn.execute("BEGIN")
        store.conn.execute(
            "WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < :n)"
            " INSERT INTO jobs (id, command, state, attempts, max_retries, priority, run_at,"
            " created_at, updated_at, finished_at, queue)"
            " SELECT :prefix || i, 'true', :state, 1, 3, :priority, :run_at, :t, :t,"
            " :done + i, :queue FROM g",
            {"n": n, "prefix": prefix, "state": state, "priority": priority, "run_at": run_at,
             "t": T0 - 1, "done": done, "queue": queue})
        if done is not None:
            store.conn.execute(
                "INSERT INTO attempts (job_id, number, claim_token, worker_id, started_at,"
                " finished_at, outcome) SELECT id, 1, 'tok-' || id, 'w', :t, finished_at,"
                " 'completed' FROM jobs WHERE id LIKE :prefix || '%'",
                {"t": T0 - 1, "prefix": prefix})


def world(path: Path, n: int) -> SqliteStorage:
    """A store with ``n`` jobs of each kind that a claim must not look at."""
    store = SqliteStorage(path)
    seed(store, n, "done-", "completed", done=T0)
    seed(store, n, "dead-", "dead", done=T0 - 10**9)  # older than every completed job
    seed(store, n, "gone-", "cancelled", done=T0)
    seed(store, n, "held-", "pending", queue="held", priority=9)
    seed(store, n, "other-", "pending", queue="other", priority=9)
    seed(store, n, "later-", "failed", run_at=T0 + 10**9)
    seed(store, 10, "due-", "pending")
    store.set_queue_paused("held", True)
    return store


def vm_steps(store: SqliteStorage, action: Callable[[], object]) -> int:
    steps = 0

    def tick() -> int:
        nonlocal steps
        steps += 1
        return 0

    store.conn.set_progress_handler(tick, 1)
    try:
        action()
    finally:
        store.conn.set_progress_handler(None, 1)
    return steps


def test_work_per_call_does_not_grow_with_jobs_it_skips(tmp_path: Path) -> None:
    small = world(tmp_path / "small.db", 3)
    large = world(tmp_path / "large.db", 20_000)
    actions: dict[str, Callable[[SqliteStorage], object]] = {
        # Before the claims below take the "other" queue's few jobs in the small world.
        "due jobs": lambda s: s.due(T0, None, 2),
        "claim from one queue": lambda s: s.claim("w", T0, LEASE, queues=["default"]),
        "claim from any queue": lambda s: s.claim("w", T0, LEASE),
        "claim from paused": lambda s: s.claim("w", T0, LEASE, queues=["held"]),
        "2 claims from one queue": lambda s: s.claim("w", T0, LEASE, ["default"], 2),
        "2 claims from any queue": lambda s: s.claim("w", T0, LEASE, None, 2),
        "2 claims from listed queues": lambda s: s.claim("w", T0, LEASE,
                                                         ["other", "held", "default"], 2),
        "next_run_at": lambda s: s.next_run_at(),
        "next_run_at listed": lambda s: s.next_run_at(["default", "held"]),
        "lease sweep": lambda s: Ledger(s).recover_expired(T0),
        "retention purge": lambda s: Ledger(s).purge(
            states=[JobState.COMPLETED, JobState.CANCELLED], finished_before=T0 + 10**6,
            limit=2),
    }
    try:
        costs = {name: (vm_steps(small, partial(act, small)), vm_steps(large, partial(act, large)))
                 for name, act in actions.items()}
        # The same answers from both ...
        assert small.next_run_at(["default", "held"]) == large.next_run_at(["default", "held"])
        assert Ledger(small).purge(states=[JobState.COMPLETED], limit=1) == ["done-2"]
        assert Ledger(large).purge(states=[JobState.COMPLETED], limit=1) == ["done-2"]
    finally:
        small.close()
        large.close()
    # ... for the same work (the issue 7 bar: at most 1.5 times).
    for name, (few, many) in costs.items():
        message = f"{name}: {few} VM steps with 3 jobs of each kind, {many} with 20,000"
        assert many <= 1.5 * few, message
