"""What is specific to the PostgreSQL store, part two: claims (their plans,
SKIP LOCKED), the compare-and-set changes (under concurrent writers, field
names, batches and their transaction), and values PostgreSQL stores its own
way."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg import sql as pgsql

from queuectl_core import transitions as rules
from queuectl_core.errors import StorageError
from queuectl_core.ledger import Ledger
from queuectl_core.models import (
    Attempt,
    AttemptChange,
    Change,
    Claim,
    ExecResult,
    Job,
    JobState,
    Outcome,
)
from queuectl_core.testing.conformance import BOOM, LEASE, OK, T0, new_job
from queuectl_core.transitions import fence
from queuectl_postgres import sql
from queuectl_postgres.store import PostgresStorage

Admin = psycopg.Connection[tuple[object, ...]]
Opener = Callable[..., PostgresStorage]


def _plan(admin: Admin, template: str, schema: str, params: dict[str, Any]) -> str:
    text = template.replace("{s}", f'"{schema}"')
    return "\n".join(str(r[0]) for r in admin.execute(f"EXPLAIN {text}", params))


def _seed_finished(admin: Admin, schema: str, n: int = 20000) -> None:
    """Many finished jobs with an attempt each, as in a long-lived queue."""
    admin.execute(
        f'INSERT INTO "{schema}".jobs (id, command, state, attempts, max_retries, run_at,'
        " created_at, updated_at, finished_at, attempt_records) SELECT 'done-' || g, 'true',"
        " 'completed', 1, 3, %(t)s, %(t)s, %(t)s, %(t)s + g, 1"
        " FROM generate_series(1, %(n)s) AS g", {"t": T0, "n": n})
    admin.execute(
        f'INSERT INTO "{schema}".attempts (job_id, number, claim_token, worker_id, started_at,'
        " finished_at, outcome) SELECT 'done-' || g, 1, md5(g::text), 'w', %(t)s, %(t)s + g,"
        " 'completed' FROM generate_series(1, %(n)s) AS g", {"t": T0, "n": n})


def _attempt_records(admin: Admin, schema: str, job_id: str) -> int:
    row = admin.execute(f'SELECT attempt_records FROM "{schema}".jobs WHERE id = %s',
                        (job_id,)).fetchone()
    assert row is not None
    return int(str(row[0]))


# ---------------------------------------------------------------- plans

def test_claim_walks_the_ready_index_without_sorting(open_store: Opener, pg_admin: Admin,
                                                     schema: str) -> None:
    store = Ledger(open_store())
    _seed_finished(pg_admin, schema)
    store.enqueue([new_job(f"p{i}", priority=i % 3) for i in range(50)])
    pg_admin.execute(f'ANALYZE "{schema}".jobs')
    # (All in one queue: the paused-queue filter must not make the planner
    # expect no row to pass and sort instead.)
    plan = _plan(pg_admin, sql.NEXT_DUE_SQL, schema, {"now": T0})
    assert "Index Scan using jobs_ready on jobs" in plan, plan
    assert "Sort" not in plan and "Seq Scan on jobs" not in plan, plan
    claim = store.claim("w", T0, LEASE)
    assert claim is not None and claim.job.id == "p2"


def test_queue_claims_and_sweeps_walk_their_indexes(open_store: Opener, pg_admin: Admin,
                                                    schema: str) -> None:
    store = Ledger(open_store())
    _seed_finished(pg_admin, schema)
    store.enqueue([new_job(f"d{i}", priority=i % 3) for i in range(2000)])
    store.enqueue([new_job(f"m{i}", queue="mail", priority=i % 3) for i in range(20)])
    store.set_queue_paused("other", True)
    pg_admin.execute(f'ANALYZE "{schema}".jobs')
    plan = _plan(pg_admin, sql.NEXT_DUE_IN_QUEUE_SQL, schema, {"now": T0, "queue": "mail"})
    assert "Index Scan using jobs_ready_queue on jobs" in plan, plan
    assert "Sort" not in plan and "Seq Scan on jobs" not in plan, plan
    plan = _plan(pg_admin, sql.NEXT_DUE_SQL, schema, {"now": T0})
    assert "Index Scan using jobs_ready on jobs" in plan and "Sort" not in plan, plan
    claim = store.claim("w", T0, LEASE, queues=["mail"])
    assert claim is not None and claim.job.id == "m2"
    for statement in (sql.NEXT_RUN_IN_QUEUES_SQL, sql.NEXT_RUN_SQL):
        plan = _plan(pg_admin, statement, schema, {"queues": ["mail"]})
        assert "using jobs_due_queue on jobs" in plan, plan
        assert "Sort" not in plan and "Seq Scan on jobs" not in plan, plan
    assert store.next_run_at() == T0
    assert store.next_run_at(["mail", "other"]) == T0 and store.next_run_at(["other"]) is None
    # A retention sweep reads the oldest finished jobs in order from their
    # index, whatever their number.
    plan = _plan(pg_admin, sql.finished_sql(True), schema,
                 {"states": ["completed"], "before": T0 + 500, "limit": 1000})
    assert "Index Scan using jobs_finished on jobs" in plan, plan
    assert "Sort" not in plan, plan
    gone = store.purge(states=[JobState.COMPLETED], finished_before=T0 + 500, limit=100)
    assert gone == [f"done-{g}" for g in range(1, 101)]


def _generic_plan(admin: Admin, statement: str, schema: str, params: dict[str, Any]) -> str:
    """The plan the server keeps for ``statement`` once it stops planning
    each execution anew (a generic plan: made without the values)."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match[1] not in names:
            names.append(match[1])
        return f"${names.index(match[1]) + 1}"

    text = re.sub(r"%\((\w+)\)s", number, statement.replace("{s}", f'"{schema}"'))
    admin.execute(f"PREPARE change AS {text}")
    try:
        admin.execute("SET plan_cache_mode = force_generic_plan")
        call = pgsql.SQL("EXPLAIN EXECUTE change({})").format(
            pgsql.SQL(", ").join(pgsql.Literal(params[n]) for n in names))
        return "\n".join(str(r[0]) for r in admin.execute(call))
    finally:
        admin.execute("RESET plan_cache_mode")
        admin.execute("DEALLOCATE change")


def test_changes_find_their_rows_by_index(open_store: Opener, pg_admin: Admin,
                                          schema: str) -> None:
    """A change reads the job by id and the attempt by its claim token (a
    deletion: the job's attempts by job), so its cost does not grow with
    the number of jobs stored: alone (in the plan the server keeps for it)
    or in a run of like changes (one statement)."""
    store = open_store()
    _seed_finished(pg_admin, schema)
    pg_admin.execute(f'ANALYZE "{schema}".jobs')
    pg_admin.execute(f'ANALYZE "{schema}".attempts')
    job = store.get("done-7")
    assert job is not None
    for change in (rules.purged(job),
                   Change(job.id, fence(job), {"state": JobState.DEAD, "claim_token": None},
                          AttemptChange("tok", fields={"outcome": "lost"}))):
        [(alone, params, _)] = sql.runs([change], "c")
        [(run, run_params, _)] = sql.runs([change, change.replace(job_id="done-8")], "c")
        for plan in (_generic_plan(pg_admin, alone, schema, params),
                     _plan(pg_admin, run, schema, run_params)):
            assert "Seq Scan" not in plan, plan
            assert "jobs_id_key on jobs" in plan, plan
            assert ("attempts_job on attempts" in plan) or (
                "attempts_claim_token_key on attempts" in plan), plan


def test_a_single_change_is_not_planned_again_each_time(open_store: Opener) -> None:
    """The statement of a lone change (a completion, a renewal: a worker's
    hot path) gets a plan the server keeps, as a claim does."""
    store = open_store()
    ledger = Ledger(store)
    ledger.enqueue([new_job(f"j{i}") for i in range(25)])
    for _ in range(25):  # (prepared on the server after a few; then planned a few times)
        claim = ledger.claim("w", T0, LEASE)
        assert claim is not None
        ledger.complete(claim, OK, T0 + 1)
    assert store.session.conn is not None
    rows = store.session.conn.execute(
        "SELECT generic_plans, custom_plans FROM pg_prepared_statements"
        " WHERE statement LIKE 'WITH i AS%'").fetchall()
    assert rows and all(row["generic_plans"] > row["custom_plans"] for row in rows), rows


def test_parameter_types_are_the_columns(open_store: Opener, pg_admin: Admin,
                                        schema: str) -> None:
    """The types the change statements give their values are those of the
    columns they are written to and compared with."""
    open_store()
    for table, types, skip in (("jobs", sql.JOB_TYPES, {"seq", "attempt_records"}),
                               ("attempts", sql.ATTEMPT_TYPES,
                                {"seq", "job_id", "claim_token"})):
        rows = pg_admin.execute(
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = %s AND table_name = %s", (schema, table)).fetchall()
        assert {str(n): str(t) for n, t in rows if n not in skip} == types, table
    assert set(sql.JOB_TYPES) == set(sql.JOB_FIELDS)


# ---------------------------------------------------------------- concurrency

def test_a_claim_skips_a_job_another_transaction_holds(open_store: Opener, pg_dsn: str,
                                                      schema: str) -> None:
    """SKIP LOCKED: a claim takes the next job instead of waiting for one
    that another claim (here: a transaction of the test's) has locked."""
    store = Ledger(open_store())
    store.enqueue([new_job("first", priority=1), new_job("second")])
    with psycopg.connect(pg_dsn) as other:  # a transaction, open until the end of the block
        other.execute(f'SELECT 1 FROM "{schema}".jobs WHERE id = %s FOR UPDATE', ("first",))
        started = time.monotonic()
        claim = store.claim("w", T0, LEASE)
        assert time.monotonic() - started < 2, "the claim did not wait"
        assert claim is not None and claim.job.id == "second"
    again = store.claim("w", T0, LEASE)
    assert again is not None and again.job.id == "first"


@pytest.mark.parametrize("other_commits", [True, False])
def test_a_change_waits_for_a_concurrent_writer_then_checks_again(
        open_store: Opener, pg_dsn: str, schema: str, other_commits: bool) -> None:
    """Read committed: a compare-and-set that meets a row another
    transaction is changing waits for it, then checks its expectation
    against the row as that transaction left it."""
    store = Ledger(open_store())
    store.enqueue([new_job("a")])
    claim = store.claim("w", T0, LEASE)
    assert claim is not None
    results: list[Job | None] = []
    with psycopg.connect(pg_dsn) as other:
        other.execute(f'UPDATE "{schema}".jobs SET cancel_requested_at = %s WHERE id = %s',
                      (T0 + 1, "a"))  # a cancel request, not committed yet
        worker = threading.Thread(target=lambda: results.append(
            store.fail(claim, BOOM, T0 + 2, None)))  # decided as read: dead
        worker.start()
        time.sleep(0.3)
        assert worker.is_alive() and results == [], "the change waits for the row"
        if not other_commits:
            other.rollback()
    worker.join(10)
    [job] = results
    assert job is not None
    if other_commits:  # the expectation failed; the ledger read the job and decided again
        assert job.state is JobState.CANCELLED and job.cancel_requested_at == T0 + 1
    else:  # the row is as it was read: the first decision stands
        assert job.state is JobState.DEAD and job.cancel_requested_at is None


# ---------------------------------------------------------------- apply

def test_apply_takes_only_record_fields_as_column_names(open_store: Opener) -> None:
    store = open_store()
    Ledger(store).enqueue([new_job("a")])
    job = store.get("a")
    assert job is not None
    good = Change("a", fence(job), {"priority": 5})
    for bad in (Change("a", fence(job), {"priority = 9, state": "dead"}),
                Change("a", {"1=1) OR (true": 1}, {"priority": 9}),
                Change("a", fence(job), {"seq": 1}),
                Change("a", fence(job), {"attempt_records": 0}),
                Change("a", fence(job), {}, AttemptChange("t", fields={"job_id": "b"})),
                Change("a", fence(job), {}, AttemptChange("t", fields={"claim_token": "x"}))):
        with pytest.raises(ValueError, match="not a field of"):
            store.apply([good, bad])
    assert store.get("a") == job, "nothing of the call was made"


def test_json_fields_compare_and_store_as_objects(open_store: Opener) -> None:
    store = open_store()
    Ledger(store).enqueue([new_job("a", env={"A": "1", "B": "2"})])
    job = store.get("a")
    assert job is not None
    [done] = store.apply([Change("a", {"env": {"B": "2", "A": "1"}},
                                 {"retry": {"policy": "linear"}, "env": {"Z": "", "A": "x"}})])
    assert done is not None and done.retry == {"policy": "linear"}
    assert list(done.env or {}) == ["Z", "A"], "kept as written"
    assert store.apply([Change("a", {"env": {"A": "1"}}, {"priority": 1})]) == [None]
    assert store.apply([Change("a", {"retry": None}, {"priority": 1})]) == [None]
    Ledger(store).enqueue([new_job("b", env={"K": "v"})])
    run = store.apply([Change(job_id, {"retry": None, "env": env}, {"env": {"N": job_id}})
                       for job_id, env in (("a", {"A": "x", "Z": ""}), ("b", {"K": "v"}))])
    assert [j.env if j else None for j in run] == [None, {"N": "b"}], "one stale, one made"


def test_a_run_of_like_changes_reports_each_one(open_store: Opener) -> None:
    """Changes of one shape go to the server together (one pipeline); each
    still gets its own answer, in order, and sees the ones before it."""
    store = open_store()
    ledger = Ledger(store)
    ledger.enqueue([new_job(f"j{i}") for i in range(6)])
    jobs = ledger.list_jobs()
    stale = {1, 4}
    changes = [rules.cancelled(job.replace(attempts=9) if i in stale else job, now=T0 + i)
               for i, job in enumerate(jobs)]
    changes.insert(3, Change("j0", fence(jobs[0]), {"priority": 9}))  # j0 changed meanwhile
    done = store.apply([c for c in changes if c is not None])
    assert [j.id if j else None for j in done] == ["j0", None, "j2", None, "j3", None, "j5"]
    assert [j.state for j in ledger.list_jobs()] == [
        JobState.CANCELLED, JobState.PENDING, JobState.CANCELLED, JobState.CANCELLED,
        JobState.PENDING, JobState.CANCELLED]
    purged = store.apply([rules.purged(j) for j in ledger.list_jobs(JobState.CANCELLED)])
    assert [j.id for j in purged if j is not None] == ["j0", "j2", "j3", "j5"]
    assert [j.id for j in ledger.list_jobs()] == ["j1", "j4"]
    # A job twice among changes of one shape: the second sees the first.
    bump = [Change(job_id, {"priority": 0}, {"priority": 1}) for job_id in ("j1", "j1", "j4")]
    assert [j.priority if j else None for j in store.apply(bump)] == [1, None, 1]


def test_runs_open_close_and_drop_attempts(open_store: Opener, pg_admin: Admin,
                                           schema: str) -> None:
    """Claims, results and releases of several jobs at once, each kind in
    one statement, keep the attempts and their count in step."""
    store = open_store()
    Ledger(store).enqueue([new_job(f"j{i}") for i in range(3)])
    jobs = store.list_jobs()
    held = store.apply([rules.claimed(job, worker_id="w", token=f"t{i}", now=T0,
                                      lease_ms=LEASE, number=1)
                        for i, job in enumerate(jobs)])
    assert [(j.state, j.claim_token) if j else None for j in held] == [
        (JobState.PROCESSING, f"t{i}") for i in range(3)]
    assert [(a.number, a.worker_id, a.outcome) for j in jobs for a in store.attempts(j.id)
            ] == [(1, "w", "running")] * 3
    assert [_attempt_records(pg_admin, schema, j.id) for j in jobs] == [1, 1, 1]
    claims = [Claim(job=j, token=f"t{i}", worker_id="w", attempt=1,
                    lease_expires_at=T0 + LEASE) for i, j in enumerate(held) if j is not None]
    done = store.apply([rules.finished(c.job, Outcome(c, OK), T0 + 1) for c in claims[:2]]
                       + [rules.finished(claims[2].job.replace(attempts=5),
                                         Outcome(claims[2], OK), T0 + 1)])  # stale
    assert [j.state if j else None for j in done] == [JobState.COMPLETED] * 2 + [None]
    assert [a.outcome for j in jobs for a in store.attempts(j.id)] == [
        "completed", "completed", "running"]
    [given_back] = store.apply([rules.released(claims[2].job, None, now=T0 + 2)])
    assert given_back is not None and given_back.state is JobState.PENDING
    assert store.attempts("j2") == [] and _attempt_records(pg_admin, schema, "j2") == 0


def test_apply_is_one_transaction(open_store: Opener) -> None:
    store = open_store()
    Ledger(store).enqueue([new_job("a"), new_job("b")])
    a, b = store.get("a"), store.get("b")
    assert a is not None and b is not None
    cancel = rules.cancelled(a, now=T0)
    assert cancel is not None
    with pytest.raises(StorageError):
        store.apply([cancel, Change("b", fence(b), {"run_at": 2**63})])  # not a bigint
    assert store.get("a") == a, "the first change was rolled back with the second"


def test_attempt_records_follow_the_attempts_opened_and_dropped(
        open_store: Opener, pg_admin: Admin, schema: str) -> None:
    """The column a claim numbers its attempt from."""
    store = open_store()
    ledger = Ledger(store)
    history = [Attempt(job_id="a", number=n, worker_id="w0", started_at=T0, finished_at=T0,
                       outcome="failed") for n in (1, 2)]
    store.insert([(new_job("a").replace(state=JobState.FAILED, attempts=2), history)])
    assert _attempt_records(pg_admin, schema, "a") == 2
    claim = ledger.claim("w", T0, LEASE)
    assert claim is not None and claim.attempt == 3
    assert _attempt_records(pg_admin, schema, "a") == 3
    ledger.release(claim, T0 + 1)
    assert _attempt_records(pg_admin, schema, "a") == 2
    job = store.get("a")
    assert job is not None
    opened = Attempt(job_id="a", number=3, worker_id="w1", started_at=T0 + 2)
    [held] = store.apply([Change("a", fence(job), {"state": JobState.PROCESSING,
                                                   "claim_token": "tok"},
                                 AttemptChange("tok", open=opened))])
    assert held is not None and _attempt_records(pg_admin, schema, "a") == 3
    assert store.attempts("a")[-1] == opened
    store.apply([Change("a", fence(held), {"state": JobState.FAILED, "claim_token": None},
                        AttemptChange("tok", drop=True))])
    assert _attempt_records(pg_admin, schema, "a") == 2
    assert [a.number for a in store.attempts("a")] == [1, 2]


# ---------------------------------------------------------------- claims and results

def test_fencing_uses_the_claim_token(open_store: Opener) -> None:
    store = Ledger(open_store())
    store.enqueue([new_job("a")])
    claim = store.claim("w", T0, LEASE)
    assert claim is not None and claim.job.claim_token == claim.token
    # (A claim as the store hands it out: its job holds its token. The ledger
    # decides a result from claim.job, so its token must be forged too.)
    forged = claim.replace(token="0" * 32, job=claim.job.replace(claim_token="0" * 32))
    assert not store.renew(forged, T0 + 1, LEASE)
    assert store.complete(forged, OK, T0 + 1) is None
    assert store.complete(claim, OK, T0 + 2) is not None
    assert [a.outcome for a in store.attempts("a")] == ["completed"]


def test_record_and_claim_is_one_transaction_and_keeps_the_real_times(
        open_store: Opener) -> None:
    store = Ledger(open_store())
    store.enqueue([new_job(i) for i in "abcd"])
    a = store.claim("w", T0, 10_000)
    b = store.claim("w", T0, 10_000)
    assert a is not None and b is not None
    # A fenced-out claim fails nothing; a broken one rolls the whole batch back.
    bogus = Outcome(a.replace(token="not-a-token"), OK)
    dones, claims = store.record_and_claim(
        [Outcome(a, OK, finished_at=T0 + 3), bogus,
         Outcome(b, OK, started_at=T0 + 3, finished_at=T0 + 5)],
        T0 + 9, worker_id="w", lease_ms=10_000, limit=2)
    assert dones[1] is None
    assert [j.id for j in dones if j is not None] == ["a", "b"]
    assert [c.job.id for c in claims] == ["c", "d"]
    [first], [second] = store.attempts("a"), store.attempts("b")
    assert (first.started_at, first.finished_at) == (T0, T0 + 3)
    assert (second.started_at, second.finished_at) == (T0 + 3, T0 + 5)
    job = store.get("b")
    assert job is not None and (job.started_at, job.finished_at) == (T0 + 3, T0 + 5)
    with pytest.raises(StorageError):
        store.record_and_claim([Outcome(claims[0], OK, finished_at=T0 + 10),
                                Outcome(claims[1], BOOM, retry_at=2**63)],  # no bigint
                               T0 + 11, worker_id="w", lease_ms=10_000, limit=1)
    c = store.get("c")
    assert c is not None and c.state is JobState.PROCESSING, "all or nothing"


def test_nul_in_error_text_is_stored(open_store: Opener) -> None:
    store = Ledger(open_store())
    store.enqueue([new_job("a")])
    claim = store.claim("w", T0, LEASE)
    assert claim is not None
    failed = store.fail(claim, ExecResult(exit_code=1, error="bad\x00byte \udce9"), T0 + 1,
                        None)
    assert failed is not None and failed.last_error is not None
    assert failed.last_error.startswith("bad\\0byte")
    assert store.attempts("a")[0].error == failed.last_error


def test_output_tails_keep_any_text_exactly(open_store: Opener) -> None:
    """Command output may hold NUL and undecodable bytes, which PostgreSQL
    text cannot: the tails are kept as bytes, exactly."""
    store = Ledger(open_store())
    store.enqueue([new_job("a"), new_job("b")])
    odd = "bin\x00ary \udce9 ✓\n"
    claim = store.claim("w", T0, LEASE)
    assert claim is not None
    store.complete(claim, ExecResult(exit_code=0, stdout_tail=odd, stderr_tail="\x00"), T0 + 1)
    claim = store.claim("w", T0, LEASE)
    assert claim is not None
    store.fail(claim, ExecResult(exit_code=1, error="e", stdout_tail="", stderr_tail=odd),
               T0 + 1, T0 + 5)
    [a] = store.attempts("a")
    [b] = store.attempts("b")
    assert (a.stdout_tail, a.stderr_tail) == (odd, "\x00")
    assert (b.stdout_tail, b.stderr_tail) == ("", odd)


def test_import_round_trips_every_field(open_store: Opener) -> None:
    store = Ledger(open_store())
    env = {"Z": "1", "A": "två", "EMPTY": ""}  # key order is kept too
    retry = {"policy": "linear", "max_delay": 60.0, "backoff_base": 3, "jitter": 0.1}
    job = Job(id="imp", command="echo x", state=JobState.FAILED, max_retries=5, run_at=T0,
              created_at=T0 - 9, updated_at=T0 - 1, attempts=2, priority=-3,
              started_at=T0 - 5, finished_at=T0 - 1, worker_id="w0", last_error="bad",
              exit_code=4, queue="mail.out", timeout=0.25, cwd="/srv/jobs dir", env=env,
              retry=retry, cancel_requested_at=None)
    history = [
        Attempt(job_id="imp", number=1, worker_id="w0", started_at=T0 - 9,
                finished_at=T0 - 8, outcome="failed", exit_code=4, error="bad",
                stdout_tail="out\x00", stderr_tail=None),
        Attempt(job_id="imp", number=2, worker_id="w0", started_at=T0 - 5,
                finished_at=T0 - 1, outcome="interrupted", error="stopped", stdout_tail=None,
                stderr_tail="err"),
    ]
    cancelled = job.replace(id="gone", state=JobState.CANCELLED, cancel_requested_at=T0 - 2,
                            env=None, retry={}, timeout=None)
    store.import_jobs([(job, history), (cancelled, [])])
    got = store.get("imp")
    assert got == job and got is not None and list(got.env or {}) == ["Z", "A", "EMPTY"]
    assert store.get("gone") == cancelled
    assert store.attempts("imp") == history
    claim = store.claim("w", T0, LEASE, queues=["mail.out"])
    assert claim is not None and claim.attempt == 3 and claim.job.attempts == 3
    assert claim.job == job.replace(state=JobState.PROCESSING, attempts=3, worker_id="w",
                                    started_at=T0, finished_at=None, updated_at=T0,
                                    lease_expires_at=T0 + LEASE, claim_token=claim.token)
