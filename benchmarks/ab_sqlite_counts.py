"""What SQLite's maintained counts cost the writes that keep them.

    python benchmarks/ab_sqlite_counts.py [--jobs 100000] [--cycles 2000] [--rounds 3]

Two stores in a temporary directory, one keeping the counts
(plugins/queuectl_sqlite/queuectl_sqlite/schema.py, VIEW_OBJECTS: triggers
on updates and deletes, ``insert`` adding its batch's) and one not
("bare": triggers dropped, ``counted`` off); in turn, round after round: a bulk insert of
--jobs new jobs (what ``enqueue --file`` stores, one transaction), then
--cycles claim+complete cycles through the core's Ledger (what a worker
does). The table shows the median rate of each and counted / bare.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from _benchutil import header

from queuectl_core.ledger import Ledger
from queuectl_core.models import ExecResult, Job, JobState
from queuectl_core.timeutil import now_ms
from queuectl_sqlite.store import SqliteStorage


def jobs(prefix: str, count: int) -> list[tuple[Job, list[object]]]:
    now = now_ms()
    return [(Job(id=f"{prefix}{i}", command="true", state=JobState.PENDING, max_retries=0,
                 run_at=now, created_at=now, updated_at=now), []) for i in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--cycles", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    header("SQLite counts A/B", f", {args.jobs:,} jobs inserted, {args.cycles} cycles a round")
    root = Path(tempfile.mkdtemp(prefix="queuectl-ab-counts-"))
    stores = {"counted": SqliteStorage(root / "counted.db"),
              "bare": SqliteStorage(root / "bare.db")}
    for name in ("job_counts_delete", "job_counts_update"):
        stores["bare"].conn.execute(f"DROP TRIGGER {name}")
    stores["bare"].counted = False  # insert adds no counts either
    rates: dict[str, dict[str, list[float]]] = {k: {"insert": [], "cycle": []} for k in stores}
    for r in range(args.rounds):
        for name, store in stores.items():
            batch = jobs(f"r{r}-", args.jobs)
            start = time.perf_counter()
            store.insert(batch)  # type: ignore[arg-type]
            rates[name]["insert"].append(args.jobs / (time.perf_counter() - start))
            ledger = Ledger(store)
            start = time.perf_counter()
            for _ in range(args.cycles):
                claim = ledger.claim("w", now_ms(), 60_000)
                assert claim is not None
                ledger.complete(claim, ExecResult(exit_code=0), now_ms())
            rates[name]["cycle"].append(args.cycles / (time.perf_counter() - start))
        print(f"round {r + 1}: " + ", ".join(
            f"{name} {rates[name]['insert'][-1]:,.0f} inserts/s "
            f"{rates[name]['cycle'][-1]:,.0f} cycles/s" for name in stores), flush=True)
    for store in stores.values():
        store.close()
    print(f"\n| SQLite, median of {args.rounds} | bare | counted | counted / bare |")
    print("|---|---|---|---|")
    for what, label in (("insert", "bulk insert, jobs/s"), ("cycle", "claim+complete, per s")):
        bare = statistics.median(rates["bare"][what])
        counted = statistics.median(rates["counted"][what])
        print(f"| {label} | {bare:,.0f} | {counted:,.0f} | {counted / bare:.2f}x |")


if __name__ == "__main__":
    main()
