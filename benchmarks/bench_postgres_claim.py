"""Benchmark the PostgreSQL store: does claiming get slower as finished jobs
pile up?

    python benchmarks/bench_postgres_claim.py [--small 1000] [--large 1000000]
                                              [--ops 2000] [--rounds 3]

The server is found like the plugin's tests do: ``QUEUECTL_TEST_POSTGRES_DSN``,
default ``postgresql://127.0.0.1:5432/test``; without a reachable server the
benchmark says so and exits (status 0).

Two schemas of their own are created, one holding ``--small`` finished
(completed) jobs and one ``--large``, each with one attempt per job; both are
seeded with a single ``INSERT ... SELECT FROM generate_series`` per table,
plus ``ops * rounds`` (and a few for warm-up) pending jobs to claim, enqueued
through the store, then ANALYZEd. A round is ``--ops`` claim+complete cycles
through the core's ``Ledger`` over the store, as a worker makes them (one
worker, one connection). Rounds alternate between the two schemas so that
noise hits both alike; the table shows the median rate of each and the
slowdown (small rate / large rate; 1.0 = none, the target is <= 1.5). Both schemas
are dropped at the end, also after an error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import psycopg

from queuectl_core.errors import StorageError
from queuectl_core.ledger import Ledger
from queuectl_core.models import ExecResult, Job

# (a block of its own: sorted the same whether or not the linter's settings
# list queuectl_postgres as first-party)
# isort: split
from queuectl_postgres.dsn import mask_secrets
from queuectl_postgres.store import PostgresStorage

DEFAULT_DSN = "postgresql://127.0.0.1:5432/test"
OK = ExecResult(exit_code=0)
T0 = 1_800_000_000_000
LEASE = 60_000
TARGET = 1.5
WARMUP = 100

Admin = psycopg.Connection[tuple[object, ...]]


def seed(admin: Admin, store: Ledger, schema: str, finished: int, pending: int) -> float:
    """Store ``finished`` completed jobs (with their attempts, in SQL) and
    ``pending`` claimable ones (enqueued through the store); returns the
    seconds it took."""
    start = time.perf_counter()
    s = f'"{schema}"'
    admin.execute(
        f"INSERT INTO {s}.jobs (id, command, state, attempts, max_retries, priority, run_at,"
        " created_at, updated_at, started_at, finished_at, worker_id, exit_code)"
        " SELECT 'done-' || g, 'echo done ' || g, 'completed', 1, 3, 0, %(t)s - g,"
        " %(t)s - g, %(t)s - g + 5, %(t)s - g + 1, %(t)s - g + 5, 'seeder', 0"
        " FROM generate_series(1, %(n)s) AS g",
        {"t": T0, "n": finished})
    admin.execute(
        f"INSERT INTO {s}.attempts (job_id, number, claim_token, worker_id, started_at,"
        " finished_at, outcome, exit_code)"
        " SELECT 'done-' || g, 1, md5(g::text), 'seeder', %(t)s - g + 1, %(t)s - g + 5,"
        " 'completed', 0 FROM generate_series(1, %(n)s) AS g",
        {"t": T0, "n": finished})
    store.enqueue([Job.new(id=f"todo-{g}", command=f"echo todo {g}", max_retries=3, run_at=T0,
                           created_at=T0) for g in range(1, pending + 1)])
    admin.execute(f"ANALYZE {s}.jobs")
    admin.execute(f"ANALYZE {s}.attempts")
    return time.perf_counter() - start


def claim_complete_rate(store: Ledger, ops: int) -> float:
    start = time.perf_counter()
    for _ in range(ops):
        claim = store.claim("bench", T0 + 1, LEASE)
        if claim is None:
            raise RuntimeError("ran out of pending jobs")
        if store.complete(claim, OK, T0 + 2) is None:
            raise RuntimeError("complete was fenced out")
    return ops / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--small", type=int, default=1_000, help="finished jobs, small case")
    parser.add_argument("--large", type=int, default=1_000_000, help="finished jobs, large case")
    parser.add_argument("--ops", type=int, default=2_000, help="claim+complete cycles a round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per case")
    args = parser.parse_args(argv)

    dsn = os.environ.get("QUEUECTL_TEST_POSTGRES_DSN") or DEFAULT_DSN
    try:
        admin: Admin = psycopg.connect(dsn, autocommit=True, connect_timeout=5)
    except psycopg.Error as exc:
        print(mask_secrets(
            f"skipped: PostgreSQL is not reachable at {dsn} ({' '.join(str(exc).split())}); "
            "start it or set QUEUECTL_TEST_POSTGRES_DSN"))
        return 0

    cases = {"small": args.small, "large": args.large}
    schemas = {name: f"qbench_{name}_{os.getpid()}" for name in cases}
    stores: dict[str, Ledger] = {}
    rates: dict[str, list[float]] = {name: [] for name in cases}
    try:
        for name, finished in cases.items():
            stores[name] = Ledger(PostgresStorage(dsn, schema=schemas[name]))
            took = seed(admin, stores[name], schemas[name], finished,
                        args.ops * args.rounds + WARMUP)
            print(f"seeded {finished:>9,} finished jobs into {schemas[name]} in {took:5.1f} s",
                  flush=True)
        for name in cases:  # warm-up: connections, plans, caches
            claim_complete_rate(stores[name], WARMUP)
        for _ in range(args.rounds):
            for name in cases:
                rates[name].append(claim_complete_rate(stores[name], args.ops))
    except StorageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        for store in stores.values():
            store.close()
        for schema in schemas.values():
            admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.close()

    small = statistics.median(rates["small"])
    large = statistics.median(rates["large"])
    ratio = small / large
    print()
    print(f"PostgreSQL claim+complete, one worker, median of {args.rounds} rounds of "
          f"{args.ops} cycles")
    print(f"{'finished jobs stored':>22} | {'claim+complete/s':>16}")
    print(f"{'-' * 22}-+-{'-' * 16}")
    print(f"{args.small:>22,} | {small:>16,.0f}")
    print(f"{args.large:>22,} | {large:>16,.0f}")
    verdict = "ok" if ratio <= TARGET else "SLOWER THAN TARGET"
    print(f"slowdown (small/large rate): {ratio:.2f}x  (target <= {TARGET}x: {verdict})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
