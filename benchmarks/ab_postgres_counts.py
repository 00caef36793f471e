"""Do PostgreSQL's maintained counts cost concurrent workers throughput?

    python benchmarks/ab_postgres_counts.py [--workers 4] [--jobs 3000] [--rounds 3]

The counts (plugins/queuectl_postgres/queuectl_postgres/views.py) are kept
by triggers that append deltas: no row is shared by concurrent writers, so
workers should not queue behind one another. This measures it: --workers
processes, each with its own connection, claim and complete --jobs jobs of
one queue through the core's Ledger (a claim, then a completion, per job,
as workers make them), once with the triggers ("counted") and once with
them dropped ("bare"), alternating for --rounds rounds; the table shows
the median jobs/s of each and their ratio (target: counted >= 0.9x bare).
The server is QUEUECTL_TEST_POSTGRES_DSN (default
postgresql://127.0.0.1:5432/test); the schemas are dropped at the end.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import time

import psycopg
from _benchutil import header

from queuectl_core.ledger import Ledger
from queuectl_core.models import ExecResult, Job, JobState
from queuectl_core.timeutil import now_ms
from queuectl_postgres.store import PostgresStorage

DSN = os.environ.get("QUEUECTL_TEST_POSTGRES_DSN", "postgresql://127.0.0.1:5432/test")


def work(schema: str, name: str) -> int:
    store = PostgresStorage(DSN, schema=schema)
    ledger = Ledger(store)
    done = 0
    while (claim := ledger.claim(name, now_ms(), 60_000)) is not None:
        ledger.complete(claim, ExecResult(exit_code=0), now_ms())
        done += 1
    store.close()
    return done


def one_round(schema: str, jobs: int, workers: int, counted: bool) -> float:
    store = PostgresStorage(DSN, schema=schema)
    if not counted:
        with store.session.cursor() as cur:
            for trigger in ("job_counts_insert", "job_counts_update", "job_counts_delete"):
                cur.execute(f'DROP TRIGGER IF EXISTS {trigger} ON "{schema}".jobs')
    now = now_ms()
    Ledger(store).enqueue([Job(id=f"{schema}-{now}-{i}", command="true",
                               state=JobState.PENDING, max_retries=0, run_at=now,
                               created_at=now, updated_at=now) for i in range(jobs)])
    store.close()
    start = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        done = sum(pool.starmap(work, [(schema, f"w{i}") for i in range(workers)]))
    took = time.perf_counter() - start
    assert done == jobs, (done, jobs)
    check = PostgresStorage(DSN, schema=schema)
    if counted:
        assert check.counts()[JobState.PENDING] == 0
    check.close()
    return jobs / took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    header("PostgreSQL counts A/B", f", {args.workers} workers, {args.jobs} jobs a round")
    schemas = {"counted": f"ab_counted_{os.getpid()}", "bare": f"ab_bare_{os.getpid()}"}
    rates: dict[str, list[float]] = {name: [] for name in schemas}
    try:
        for _ in range(args.rounds):
            for name, schema in schemas.items():
                rates[name].append(one_round(schema, args.jobs, args.workers,
                                             counted=name == "counted"))
                print(f"{name}: {rates[name][-1]:,.0f} jobs/s", flush=True)
    finally:
        with psycopg.connect(DSN, autocommit=True) as conn:
            for schema in schemas.values():
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    counted = statistics.median(rates["counted"])
    bare = statistics.median(rates["bare"])
    print(f"\n| {args.workers} workers | bare | counted | ratio |\n|---|---|---|---|\n"
          f"| claim + complete, jobs/s (median of {args.rounds}) | {bare:,.0f} | "
          f"{counted:,.0f} | {counted / bare:.2f}x |")


if __name__ == "__main__":
    main()
