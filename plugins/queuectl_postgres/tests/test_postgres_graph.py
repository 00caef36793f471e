"""What is specific to the PostgreSQL store, part four: jobs that run after
others, unique keys and concurrency limits under concurrent transactions
(the kit checks the promises; these check how PostgreSQL keeps them)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from queuectl_core.errors import UniqueKeyError
from queuectl_core.ledger import Ledger
from queuectl_core.models import Change, Claim, Job, JobState
from queuectl_core.storage import LIMITS_SETTING
from queuectl_core.testing.conformance import BOOM, LEASE, OK, T0, new_job
from queuectl_core.transitions import fence
from queuectl_postgres import sql
from queuectl_postgres.store import PostgresStorage

Admin = psycopg.Connection[tuple[object, ...]]
Opener = Callable[..., PostgresStorage]


def test_a_keyed_claim_waits_for_the_keys_lock_then_counts_what_it_guarded(
        open_store: Opener, pg_dsn: str, schema: str) -> None:
    """Two claimers of one key: the second waits for the first's advisory
    lock, then counts the job the first made processing (committed while it
    waited), so the key's limit of 1 holds; the job behind it is taken."""
    store = Ledger(open_store())
    store.enqueue([new_job("k1", concurrency_key="gpu", priority=1),
                   new_job("k2", concurrency_key="gpu", priority=1), new_job("plain")])
    results: list[list[Claim]] = []
    with psycopg.connect(pg_dsn) as other:  # a claimer, inside the key's lock
        other.execute("SELECT pg_advisory_xact_lock(hashtext(%s), hashtext('gpu'))", (schema,))
        other.execute(f"UPDATE \"{schema}\".jobs SET state = 'processing', claim_token = 't'"
                      " WHERE id = 'k1'")
        claimer = threading.Thread(target=lambda: results.append(
            store.store.claim("w", T0, LEASE, None, 3)))
        claimer.start()
        time.sleep(0.3)
        assert claimer.is_alive() and results == [], "the claim waits for the key"
    claimer.join(10)
    assert [c.job.id for c in results[0]] == ["plain"], "k2 is held back by its key"


def test_an_atomic_apply_that_loses_a_race_undoes_its_other_changes(
        open_store: Opener, pg_dsn: str, schema: str) -> None:
    """Read committed: a compare-and-set that waited for a concurrent writer
    checks its expectation again on the row that writer left, matches
    nothing, and the whole call is rolled back."""
    store = open_store()
    store.insert([(new_job("a"), ()), (new_job("b"), ())])
    a, b = store.get("a"), store.get("b")
    assert a is not None and b is not None
    results: list[list[Job | None]] = []
    with psycopg.connect(pg_dsn) as other:
        other.execute(f'UPDATE "{schema}".jobs SET attempts = 5 WHERE id = %s', ("b",))
        writer = threading.Thread(target=lambda: results.append(store.apply(
            [Change("a", fence(a), {"priority": 1}), Change("b", fence(b), {"priority": 1})],
            atomic=True)))
        writer.start()
        time.sleep(0.3)
        assert writer.is_alive(), "the change of b waits for the row"
    writer.join(10)
    assert results == [[None, None]]
    after = store.get("a")
    assert after is not None and after.priority == 0, "a's change was undone"


def test_a_retry_that_would_share_a_unique_key_is_refused_and_names_the_holder(
        open_store: Opener) -> None:
    store = Ledger(open_store())
    store.enqueue([new_job("old", unique_key="nightly", max_retries=0)])
    claim = store.claim("w", T0, LEASE)
    assert claim is not None
    store.fail(claim, BOOM, T0, None)
    store.enqueue([new_job("new", unique_key="nightly")])
    with pytest.raises(UniqueKeyError) as caught:
        store.dlq_retry("old", T0 + 1)
    assert (caught.value.key, caught.value.holder) == ("nightly", "new")
    old = store.get("old")
    assert old is not None and old.state is JobState.DEAD, "nothing changed"
    with pytest.raises(UniqueKeyError) as caught:  # (the core refuses this before)
        store.store.insert([(new_job("x", unique_key="k"), ()), (new_job("y", unique_key="k"), ())])
    assert caught.value.holder == "x" and store.get("x") is None, "a batch: nothing stored"


def test_a_deleted_job_takes_its_edges_with_it(open_store: Opener, pg_admin: Admin,
                                               schema: str) -> None:
    store = Ledger(open_store())
    store.enqueue([new_job("p"), new_job("c", after=["p"])])
    store.complete(store.claim("w", T0, LEASE) or pytest.fail("no claim"), OK, T0)
    store.complete(store.claim("w", T0, LEASE) or pytest.fail("no claim"), OK, T0)
    assert store.purge(states=[JobState.COMPLETED]) == ["p", "c"]
    assert pg_admin.execute(f'SELECT count(*) FROM "{schema}".job_parents').fetchone() == (0,)
    store.enqueue([new_job("p")])
    assert store.store.dependents("p") == [], "a new job with the old id has no children"


def test_keyed_claims_fill_every_free_slot_across_rounds(open_store: Opener) -> None:
    """Keys at their limit never hold back what is behind them, even when
    they fill up in the middle of one claim of several jobs."""
    store = open_store()
    store.set_setting(LIMITS_SETTING, {"gpu": 2})
    store.insert([(new_job(f"g{i}", concurrency_key="gpu", priority=9), ()) for i in range(6)]
                 + [(new_job(f"p{i}"), ()) for i in range(3)])
    claims = store.claim("w", T0, LEASE, None, 4)
    assert [c.job.id for c in claims] == ["g0", "g1", "p0", "p1"], "in claim order"
    assert store.due_count(T0, None, 10) == 1 and [j.id for j in store.due(T0)] == ["p2"]


def _plan(admin: Admin, template: str, schema: str, params: Any) -> str:
    text = template.replace("{s}", f'"{schema}"')
    return "\n".join(str(r[0]) for r in admin.execute(f"EXPLAIN {text}", params))


def test_keys_and_edges_are_read_by_their_indexes(open_store: Opener, pg_admin: Admin,
                                                  schema: str) -> None:
    """A keyed claim seeks its key's jobs and counts its running ones; a
    parent's children, and a unique key's holder, are index look-ups: none
    of them reads the whole queue."""
    store = Ledger(open_store())
    store.enqueue([new_job(f"p{i}") for i in range(2000)]
                  + [new_job(f"k{i}", concurrency_key=f"key{i % 20}", unique_key=f"u{i}",
                             after=[f"p{i}"]) for i in range(1000)])
    pg_admin.execute(f'ANALYZE "{schema}".jobs')
    pg_admin.execute(f'ANALYZE "{schema}".job_parents')
    plan = _plan(pg_admin, sql.KEYED_CLAIM_SQLS[0], schema, {
        "now": T0, "worker": "w", "token": "t", "lease": T0, "key": "key3", "limit": 2})
    assert "using jobs_keyed_ready on jobs" in plan and "Seq Scan on jobs" not in plan, plan
    for statement, params, index in ((sql.DEPENDENTS_SQL, ("p7",), "job_parents_pkey"),
                                     (sql.HOLDER_SQL, ("u7", None), "jobs_unique")):
        plan = _plan(pg_admin, statement, schema, params)
        assert f"using {index} on" in plan and "Seq Scan on jobs" not in plan, plan
