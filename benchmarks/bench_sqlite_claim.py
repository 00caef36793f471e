"""Benchmark the SQLite store: does claiming get slower as finished jobs
pile up?

    python benchmarks/bench_sqlite_claim.py [--small 1000] [--large 1000000]
                                            [--ops 1000] [--rounds 7] [--dir DIR] [--quick]

Two queue files are created by the plugin's own ``SqliteStorage`` (so they
have its current schema), one holding ``--small`` finished (completed) jobs
and one ``--large``, each with one attempt per job. Seeding is fast: one job
is enqueued, claimed and completed through the store API, then its ``jobs``
and ``attempts`` rows are copied N times with one ``INSERT ... SELECT`` over
a recursive counter per table (every column copied as it is, except the job
id and the attempt's claim token), with ``synchronous=OFF`` for the seeding
connection only, then the file is fsynced, so that the kernel's write-back
of the seeding does not land in the measured rounds. Then ``ops * rounds``
(plus a warm-up) pending jobs are enqueued through the API.

A round is ``--ops`` claim+complete cycles through the ordinary store API
with the default durability (WAL, ``synchronous=FULL``: one fsync per
commit), one worker. Rounds alternate between the two stores so that disk
noise hits both alike (on a shared machine other processes' fsyncs make single
rounds vary several-fold: many short rounds and the median keep one burst
from deciding the result); the table shows the median rate of each and the
slowdown (small rate / large rate; 1.0 = none, the target of issue 7 is
<= 1.5). ``--quick``: 100,000 finished jobs in the large store, 3 rounds of
500 ops. The files are deleted at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

from queuectl_core.ledger import Ledger
from queuectl_core.models import ExecResult, Job

# (a block of its own: sorted the same whether or not the linter's settings
# list queuectl_sqlite as first-party)
# isort: split
from queuectl_sqlite.store import SqliteStorage

OK = ExecResult(exit_code=0)
T0 = 1_800_000_000_000
LEASE = 60_000
TARGET = 1.5
WARMUP = 100
TEMPLATE = "template-finished-job"


def new_job(job_id: str) -> Job:
    return Job.new(id=job_id, command=f"echo {job_id}", max_retries=3, run_at=T0,
                  created_at=T0)


def clone_rows(conn: sqlite3.Connection, table: str, where: str, count: int,
               replace: dict[str, str], skip: tuple[str, ...]) -> None:
    """Insert ``count`` copies of the one row of ``table`` matching ``where``,
    with the columns in ``replace`` computed from the counter ``g.n``."""
    columns = [row[1] for row in conn.execute(f"PRAGMA table_info({table})")
               if row[1] not in skip]
    values = ", ".join(replace.get(c, f"t.{c}") for c in columns)
    conn.execute(
        f"WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < ?)"
        f" INSERT INTO {table} ({', '.join(columns)})"
        f" SELECT {values} FROM g, (SELECT * FROM {table} WHERE {where}) AS t",
        (count,))


def seed(path: Path, finished: int, pending: int) -> float:
    """Create a store with ``finished`` completed jobs (one attempt each) and
    ``pending`` claimable ones; returns the seconds it took."""
    start = time.perf_counter()
    store = Ledger(SqliteStorage(path))
    store.enqueue([new_job(TEMPLATE)])
    claim = store.claim("seeder", T0, LEASE)
    if claim is None or store.complete(claim, OK, T0 + 1) is None:
        raise RuntimeError("could not finish the template job")
    store.close()

    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("BEGIN IMMEDIATE")
    clone_rows(conn, "jobs", f"id = '{TEMPLATE}'", finished,
               {"id": "'done-' || g.n"}, skip=("seq",))
    clone_rows(conn, "attempts", f"job_id = '{TEMPLATE}'", finished,
               {"job_id": "'done-' || g.n", "claim_token": "'seed-token-' || g.n"},
               skip=("rowid",))
    conn.execute(f"DELETE FROM attempts WHERE job_id = '{TEMPLATE}'")
    conn.execute(f"DELETE FROM jobs WHERE id = '{TEMPLATE}'")
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    fd = os.open(path, os.O_RDONLY)  # flush the unsynced seeding now, not mid-round
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

    store = Ledger(SqliteStorage(path))
    store.enqueue([new_job(f"todo-{i:07d}") for i in range(pending)])
    counts = {state.value: n for state, n in store.counts().items()}
    store.close()
    if counts.get("completed") != finished or counts.get("pending") != pending:
        raise RuntimeError(f"seeding went wrong: {counts}")
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
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--small", type=int, default=1_000, help="finished jobs, small case")
    parser.add_argument("--large", type=int, default=1_000_000, help="finished jobs, large case")
    parser.add_argument("--ops", type=int, default=1_000, help="claim+complete cycles a round")
    parser.add_argument("--rounds", type=int, default=7, help="rounds per case")
    parser.add_argument("--dir", type=Path, default=None,
                        help="where to create the stores (default: a temp dir)")
    parser.add_argument("--quick", action="store_true",
                        help="100,000 finished jobs in the large store, 3 rounds of 500 ops")
    args = parser.parse_args(argv)
    if args.quick:
        args.large, args.ops, args.rounds = 100_000, 500, 3

    print(f"SQLite claim+complete: {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.2f} (1 min) at start, SQLite {sqlite3.sqlite_version}",
          flush=True)
    root = Path(tempfile.mkdtemp(prefix="bench-sqlite-claim-", dir=args.dir))
    root.chmod(0o700)
    cases = {"small": args.small, "large": args.large}
    stores: dict[str, Ledger] = {}
    rates: dict[str, list[float]] = {name: [] for name in cases}
    try:
        for name, finished in cases.items():
            path = root / f"{name}.db"
            took = seed(path, finished, args.ops * args.rounds + WARMUP)
            size = path.stat().st_size / 2**20
            print(f"seeded {finished:>9,} finished jobs into {path.name} in {took:5.1f} s "
                  f"({size:,.0f} MiB)", flush=True)
            stores[name] = Ledger(SqliteStorage(path))  # durable: synchronous=FULL
        for name in cases:  # warm-up: page cache, statement cache
            claim_complete_rate(stores[name], WARMUP)
        for _ in range(args.rounds):
            for name in cases:
                rates[name].append(claim_complete_rate(stores[name], args.ops))
    finally:
        for store in stores.values():
            store.close()
        shutil.rmtree(root, ignore_errors=True)

    small = statistics.median(rates["small"])
    large = statistics.median(rates["large"])
    ratio = small / large
    print()
    print(f"SQLite claim+complete (WAL, synchronous=FULL), one worker, median of "
          f"{args.rounds} rounds of {args.ops} cycles")
    print(f"{'finished jobs stored':>22} | {'claim+complete/s':>16} | {'rounds':<24}")
    print(f"{'-' * 22}-+-{'-' * 16}-+-{'-' * 24}")
    for name, finished in cases.items():
        each = ", ".join(f"{r:,.0f}" for r in rates[name])
        print(f"{finished:>22,} | {statistics.median(rates[name]):>16,.0f} | {each}")
    verdict = "met" if ratio <= TARGET else "NOT met"
    print(f"slowdown (small/large rate): {ratio:.2f}x  (target <= {TARGET}x: {verdict}; "
          f"load average {os.getloadavg()[0]:.2f} at the end)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
