"""Benchmark the SQLite store: does claiming get slower as finished jobs
pile up (issue 7: at most 1.5 times slower with 1,000,000 than with 1,000)?

    python plugins/queuectl_sqlite/benchmarks/bench_sqlite_claim.py
        [--small 1000] [--large 1000000] [--ops 2000] [--rounds 3]
        [--synchronous full|normal] [--queues a,b]

Two stores are made in a temporary directory, one holding ``--small``
finished (completed) jobs and one ``--large``, each with one attempt per job,
seeded with one ``INSERT ... SELECT`` per table, plus ``ops * rounds`` (and a
few for warm-up) pending jobs to claim. A round is ``--ops`` claim+complete
cycles through the ordinary store API (one worker; with ``--queues`` the
claims name ``default`` and those queues, like ``worker start --queue``). Rounds alternate between
the two stores so that noise hits both alike; the table shows the median
rate of each and the slowdown (small rate / large rate; 1.0 = none). The
directory is removed at the end.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from queuectl_core.models import ExecResult
from queuectl_sqlite.store import SqliteStorage

OK = ExecResult(exit_code=0)
T0 = 1_800_000_000_000
LEASE = 60_000
TARGET = 1.5
WARMUP = 100


def seed(store: SqliteStorage, finished: int, pending: int) -> float:
    """Store ``finished`` completed jobs (with their attempts) and
    ``pending`` claimable ones; returns the seconds it took."""
    start = time.perf_counter()
    conn = store.conn
    series = "WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < :n) "
    conn.execute("BEGIN")
    conn.execute(
        series + "INSERT INTO jobs (id, command, state, attempts, max_retries, priority, run_at,"
        " created_at, updated_at, started_at, finished_at, worker_id, exit_code)"
        " SELECT 'done-' || i, 'echo done ' || i, 'completed', 1, 3, 0, :t - i, :t - i,"
        " :t - i + 5, :t - i + 1, :t - i + 5, 'seeder', 0 FROM g",
        {"t": T0, "n": finished})
    conn.execute(
        series + "INSERT INTO attempts (job_id, number, claim_token, worker_id, started_at,"
        " finished_at, outcome, exit_code)"
        " SELECT 'done-' || i, 1, 'seed-' || i, 'seeder', :t - i + 1, :t - i + 5,"
        " 'completed', 0 FROM g",
        {"t": T0, "n": finished})
    conn.execute(
        series + "INSERT INTO jobs (id, command, state, attempts, max_retries, priority, run_at,"
        " created_at, updated_at) SELECT 'todo-' || i, 'echo todo ' || i, 'pending', 0, 3, 0,"
        " :t, :t, :t FROM g",
        {"t": T0, "n": pending})
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return time.perf_counter() - start


def claim_complete_rate(store: SqliteStorage, ops: int, queues: list[str] | None) -> float:
    start = time.perf_counter()
    for _ in range(ops):
        claim = store.claim("bench", T0 + 1, LEASE, queues)
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
    parser.add_argument("--synchronous", choices=("full", "normal"), default="full")
    parser.add_argument("--queues", help="claims name default and these queues (a,b,...)")
    args = parser.parse_args(argv)
    queues = None if args.queues is None else ["default", *args.queues.split(",")]

    cases = {"small": args.small, "large": args.large}
    directory = Path(tempfile.mkdtemp(prefix="qbench-sqlite-"))
    stores: dict[str, SqliteStorage] = {}
    rates: dict[str, list[float]] = {name: [] for name in cases}
    try:
        for name, finished in cases.items():
            path = directory / f"{name}.db"
            stores[name] = SqliteStorage(path, synchronous=args.synchronous)
            took = seed(stores[name], finished, args.ops * args.rounds + WARMUP)
            size = path.stat().st_size / 2**20
            print(f"seeded {finished:>9,} finished jobs into {path.name} in {took:5.1f} s"
                  f" ({size:,.0f} MiB)", flush=True)
        for name in cases:  # warm-up: statement cache, page cache
            claim_complete_rate(stores[name], WARMUP, queues)
        for _ in range(args.rounds):
            for name in cases:
                rates[name].append(claim_complete_rate(stores[name], args.ops, queues))
    finally:
        for store in stores.values():
            store.close()
        shutil.rmtree(directory, ignore_errors=True)

    small = statistics.median(rates["small"])
    large = statistics.median(rates["large"])
    ratio = small / large
    print()
    print(f"SQLite claim+complete (synchronous={args.synchronous}, queues="
          f"{'any' if queues is None else ','.join(queues)}), one worker, median of "
          f"{args.rounds} rounds of {args.ops} cycles")
    print(f"{'finished jobs stored':>22} | {'claim+complete/s':>16}")
    print(f"{'-' * 22}-+-{'-' * 16}")
    print(f"{args.small:>22,} | {small:>16,.0f}")
    print(f"{args.large:>22,} | {large:>16,.0f}")
    verdict = "ok" if ratio <= TARGET else "SLOWER THAN TARGET"
    print(f"slowdown (small/large rate): {ratio:.2f}x  (target <= {TARGET}x: {verdict})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
