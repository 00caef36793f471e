"""Dependencies and concurrency limits: the three figures of issue 18.

    python benchmarks/bench_dependencies.py [--only chain,fan,limits]
                                            [--backends sqlite,postgres] [--quick]

* **chain**: one worker (real processes, SQLite) runs 200 ``true`` jobs, each
  after the one before, against 200 independent ``true`` jobs (the baseline,
  measured in the same run). The figure is the span from the first claim to
  the last completion, read from the jobs' attempts; target ratio <= 2.
* **fan**: through the core's Ledger on each store: one parent with 10,000
  children, and 10,000 parents with one child. Reported: the enqueue, the
  store call that records the one parent's result and releases its 10,000
  children, and the average cost of recording each of the 10,000 parents
  (each moves the child's count down; the last releases it), against the
  cost of recording a job with no children (the baseline). Each is measured
  again with 100,000 unrelated finished jobs stored: the cost grows with the
  children, not with the queue. Target: each release about 1 s or less.
* **limits**: ``limit set gpu 2``, 8 workers (two supervisors of 4), 200 keyed
  jobs (``sleep 0.05``) and 200 plain ones (``sleep 0.01``), SQLite. Reported:
  the most keyed jobs whose attempts overlapped in time (must be exactly 2),
  and when the plain jobs finished against the keyed ones.

PostgreSQL runs when QUEUECTL_TEST_POSTGRES_DSN (default
postgresql://127.0.0.1:5432/test) answers; each run uses its own schema.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from _benchutil import QUEUECTL, Skip, header, kill_leftovers, private_dir

from queuectl_core.ledger import Ledger
from queuectl_core.models import ExecResult, Job, JobState
from queuectl_core.storage import Storage

T0 = 1_800_000_000_000
OK = ExecResult(exit_code=0)


def _ms(text: str) -> int:
    return round(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


# ------------------------------------------------------------------ real workers

def _cli(home: Path, *args: str, stdin: str | None = None) -> str:
    env = {**os.environ, "QUEUECTL_HOME": str(home), "QUEUECTL_BENCH": str(home)}
    return subprocess.run([str(QUEUECTL), *args], input=stdin, capture_output=True, text=True,
                          env=env, check=True, timeout=600).stdout


def _drain(jobs: list[dict[str, Any]], workers: list[int], setup: Callable[[Path], object]
           ) -> list[dict[str, Any]]:
    home = private_dir("qbench-deps-")
    try:
        _cli(home, "config", "set", "worker_idle_delay", "50")
        setup(home)
        for n, count in enumerate(workers):
            _cli(home, "worker", "start", "--count", str(count), *(["--add"] if n else []))
        _cli(home, "enqueue", "--file", "-", stdin="".join(json.dumps(j) + "\n" for j in jobs))
        # A status call costs a core for ~70 ms: let short runs finish before
        # the first, so that polling does not compete with what is measured.
        time.sleep(max(1.0, len(jobs) / 400))
        deadline = time.monotonic() + 600
        while json.loads(_cli(home, "status", "--json"))["completed"] < len(jobs):
            if time.monotonic() > deadline:
                raise TimeoutError("jobs did not finish in 600 s")
            time.sleep(0.5)
        _cli(home, "worker", "stop")
        return [json.loads(_cli(home, "show", j["id"], "--json")) for j in jobs]
    finally:
        kill_leftovers(f"QUEUECTL_BENCH={home}")


def _span(shown: list[dict[str, Any]]) -> float:
    starts = [_ms(j["attempts_history"][-1]["started_at"]) for j in shown]
    ends = [_ms(j["attempts_history"][-1]["finished_at"]) for j in shown]
    return (max(ends) - min(starts)) / 1000


def bench_chain(n: int, rounds: int = 5) -> None:
    """Alternate independent and chained runs; each span is a fraction of
    a second, so one pair is noisy: report every ratio and their median."""
    plain = [{"id": f"j{i}", "command": "true"} for i in range(n)]
    chain = [{"id": f"j{i}", "command": "true", **({"after": [f"j{i - 1}"]} if i else {})}
             for i in range(n)]
    ratios = []
    for _ in range(rounds):
        base = _span(_drain(plain, [1], lambda h: None))
        chained = _span(_drain(chain, [1], lambda h: None))
        ratios.append(chained / base)
        print(f"chain: {n} independent true jobs {base:.2f} s, a chain of {n} {chained:.2f} s: "
              f"ratio {chained / base:.2f}")
    print(f"chain: median ratio over {rounds} rounds {statistics.median(ratios):.2f} "
          f"(range {min(ratios):.2f}-{max(ratios):.2f}; target <= 2)")


def bench_limits(keyed: int) -> None:
    jobs = [{"id": f"g{i}", "command": "sleep 0.05", "concurrency_key": "gpu"}
            for i in range(keyed)]
    jobs += [{"id": f"p{i}", "command": "sleep 0.01"} for i in range(keyed)]
    shown = _drain(jobs, [4, 4], lambda h: _cli(h, "limit", "set", "gpu", "2"))
    events = []
    for job in shown:
        if job["id"].startswith("g"):
            attempt = job["attempts_history"][-1]
            events += [(_ms(attempt["started_at"]), 1), (_ms(attempt["finished_at"]), -1)]
    running = most = 0
    for _, step in sorted(events, key=lambda e: (e[0], e[1])):  # ends first at a tie
        running += step
        most = max(most, running)
    ends = {j["id"][0]: [] for j in shown}  # type: dict[str, list[int]]
    for j in shown:
        ends[j["id"][0]].append(_ms(j["attempts_history"][-1]["finished_at"]))
    print(f"limits: limit gpu 2, 8 workers, {keyed} keyed + {keyed} plain jobs: at most "
          f"{most} keyed jobs ran at once (target exactly 2); plain jobs all done "
          f"{(max(ends['g']) - max(ends['p'])) / 1000:.2f} s before the last keyed one")


# ------------------------------------------------------------------ the ledger

def _job(job_id: str, **extra: Any) -> Job:
    return Job.new(id=job_id, command="true", max_retries=0, run_at=T0, created_at=T0, **extra)


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _fan(opener: Callable[[], Storage], n: int, background: int) -> dict[str, float]:
    ledger = Ledger(opener())
    try:
        if background:
            ledger.store.insert([(_job(f"old{i}").replace(
                state=JobState.COMPLETED, finished_at=T0), ()) for i in range(background)])
        out: dict[str, float] = {}
        # Baseline: recording a job nobody runs after.
        ledger.enqueue([_job("plain")])
        first = ledger.claim("w", T0, 60_000)
        assert first is not None
        out["plain"] = _timed(lambda: ledger.complete(first, OK, T0))
        # Fan-out: one parent, n children.
        out["fan-out enqueue"] = _timed(lambda: ledger.enqueue(
            [_job("root")] + [_job(f"c{i}", after=["root"]) for i in range(n)]))
        root = ledger.claim("w", T0, 60_000)
        assert root is not None and root.job.id == "root"
        out["fan-out release"] = _timed(lambda: ledger.complete(root, OK, T0))
        assert ledger.counts()[JobState.PENDING] == n
        # Fan-in: n parents, one child (parents in another queue, so the
        # released children above do not get in the way).
        out["fan-in enqueue"] = _timed(lambda: ledger.enqueue(
            [_job(f"p{i}", queue="in") for i in range(n)]
            + [_job("sink", after=[f"p{i}" for i in range(n)], queue="sink")]))
        claims = [ledger.claim("w", T0, 60_000, ["in"]) for _ in range(n)]
        start = time.perf_counter()
        for held in claims:
            assert held is not None
            ledger.complete(held, OK, T0)
        out["fan-in per parent"] = (time.perf_counter() - start) / n
        sink = ledger.get("sink")
        assert sink is not None and sink.state is JobState.PENDING
        return out
    finally:
        ledger.close()


def bench_fan(backends: list[str], n: int, background: int) -> None:
    for name in backends:
        for bg in (0, background):
            try:
                opener, cleanup = _opener(name)
            except Skip as why:
                print(f"fan ({name}): skipped: {why}")
                break
            try:
                got = _fan(opener, n, bg)
            finally:
                cleanup()
            base = got["plain"]
            print(f"fan ({name}, {bg:,} other jobs stored): recording a job with no "
                  f"children {base * 1000:.1f} ms; one parent's {n:,} children: enqueue "
                  f"{got['fan-out enqueue']:.2f} s, release {got['fan-out release']:.2f} s;"
                  f" {n:,} parents of one child: enqueue {got['fan-in enqueue']:.2f} s, "
                  f"{got['fan-in per parent'] * 1000:.1f} ms per parent recorded "
                  f"({got['fan-in per parent'] / base:.1f}x the baseline)")


def _opener(name: str) -> tuple[Callable[[], Storage], Callable[[], object]]:
    if name == "sqlite":
        from queuectl_sqlite.store import SqliteStorage

        directory = private_dir("qbench-fan-")
        return (lambda: SqliteStorage(directory / "queue.db", synchronous="normal"),
                lambda: subprocess.run(["rm", "-rf", str(directory)], check=False))
    if name == "postgres":
        try:
            import psycopg

            from queuectl_postgres.store import PostgresStorage
        except ImportError as exc:
            raise Skip(str(exc)) from None
        dsn = os.environ.get("QUEUECTL_TEST_POSTGRES_DSN", "postgresql://127.0.0.1:5432/test")
        schema = f"qbench_{uuid.uuid4().hex[:10]}"
        try:
            psycopg.connect(dsn, connect_timeout=3).close()
        except psycopg.Error as exc:
            raise Skip(f"PostgreSQL at {dsn} does not answer: {exc}") from None

        def drop() -> None:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')

        return lambda: PostgresStorage(dsn, schema=schema), drop
    raise Skip(f"unknown backend {name}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="chain,fan,limits")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--quick", action="store_true", help="smaller counts")
    args = parser.parse_args()
    only = args.only.split(",")
    header("bench_dependencies")
    if "chain" in only:
        bench_chain(50 if args.quick else 200)
    if "fan" in only:
        bench_fan(args.backends.split(","), 1000 if args.quick else 10_000,
                  10_000 if args.quick else 100_000)
    if "limits" in only:
        bench_limits(50 if args.quick else 200)
    return 0


if __name__ == "__main__":
    sys.exit(main())
