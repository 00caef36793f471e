"""Pickup latency: from `queuectl enqueue` to the job's command starting.

How soon an idle worker starts a job after ``queuectl enqueue`` returns, on
SQLite and on PostgreSQL.

    python benchmarks/bench_pickup.py [--enqueues 100] [--workers 4] [--gap 0.2]
                                      [--backends sqlite,postgres] [--quick]

For each backend: a fresh QUEUECTL_HOME, ``queuectl worker start --count
--workers``, wait until ``status --json`` shows them all active, three
warm-up jobs, then ``--enqueues`` jobs, one at a time, ``--gap`` seconds
apart (so every worker is idle again, asleep in its poll). Each job's command
is ``date +%s%N > FILE``: the command writes the wall-clock time at which it
started (ns). Per job the script records

* start latency: command start time - the moment ``queuectl enqueue
  '{...}'`` returned (the target: median <= 20 ms on each backend);
* start after commit: command start time - the job's ``created_at`` (set
  just before the enqueue transaction, ms): the wake-up, claim and spawn
  alone, without the enqueue command's own exit;
* claim latency: the attempt's ``started_at`` (from ``list --json``, ms) - the
  same moment;
* the duration of the enqueue call itself, for reference.

A latency after return can be negative: ``enqueue`` pokes the idle workers
as soon as the job is committed, before its own process has exited, so the
second figure is the one that shows the wake-up path; both are held to the
20 ms target. The command start
includes one ``date`` exec (about 1 ms). No baseline ratio: the target is
absolute.

PostgreSQL: ``QUEUECTL_TEST_POSTGRES_DSN``, default
``postgresql://127.0.0.1:5432/test`` (trust auth), a schema of its own per
run (``backends.postgres.schema`` in the home's ``queuectl.yaml``, as the
integration tests do), dropped at the end. Skipped with a message when the
server is unreachable or psycopg is missing. ``--quick``: 20 enqueues.

Workers are stopped in a ``finally`` (``queuectl worker stop``); any process
left with this run's QUEUECTL_HOME in its environment is killed by pid.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from _benchutil import QUEUECTL, Skip, header, kill_leftovers, private_dir, wait_until

DEFAULT_DSN = "postgresql://127.0.0.1:5432/test"
TARGET_MS = 20.0
WARMUP = 3

def iso_ms(text: str) -> float:
    """``2026-11-28T13:15:17.123Z`` as epoch milliseconds."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000


def postgres_setup(home: Path, env: dict[str, str]) -> Callable[[], None]:
    """Point ``home`` at a schema of its own; returns the clean-up."""
    try:
        import psycopg
    except ImportError:
        raise Skip("psycopg is not installed (the queuectl-postgres plugin needs it)") from None
    dsn = os.environ.get("QUEUECTL_TEST_POSTGRES_DSN") or DEFAULT_DSN
    try:
        psycopg.connect(dsn, connect_timeout=5).close()
    except psycopg.Error as exc:
        raise Skip(f"PostgreSQL not reachable ({type(exc).__name__}); start it or set "
                   "QUEUECTL_TEST_POSTGRES_DSN") from None
    schema = f"qbench_pickup_{os.getpid()}"
    (home / "queuectl.yaml").write_text(f"backends:\n  postgres:\n    schema: {schema}\n")
    env["QUEUECTL_BACKEND"] = "postgres"
    env["QUEUECTL_POSTGRES_DSN"] = dsn

    def drop() -> None:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')

    return drop


def measure(backend: str, enqueues: int, workers: int, gap: float
            ) -> dict[str, list[float]]:
    """Latencies in ms: start, commit (start after created_at), claim, and
    the enqueue call."""
    if not QUEUECTL.exists():
        raise Skip(f"no queuectl next to {sys.executable}")
    home = private_dir(f"bench-pickup-{backend}-")
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUEUECTL_")}
    env["QUEUECTL_HOME"] = str(home)
    cleanup: Callable[[], None] | None = None

    def q(*args: str) -> str:
        proc = subprocess.run([str(QUEUECTL), *args], env=env, cwd=home, capture_output=True,
                              text=True, timeout=60, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"queuectl {' '.join(args)} exited {proc.returncode}: "
                               f"{proc.stderr.strip()}")
        return proc.stdout

    stamps = home / "stamps"
    stamps.mkdir()
    try:
        if backend == "postgres":
            cleanup = postgres_setup(home, env)
        q("worker", "start", "--count", str(workers))
        wait_until(lambda: json.loads(q("status", "--json"))["active_workers"] == workers,
                   30, f"{workers} active workers", 0.1)
        out: dict[str, list[float]] = {"start": [], "commit": [], "claim": [], "call": []}
        returned: dict[str, float] = {}
        began_ms: dict[str, float] = {}
        for i in range(-WARMUP, enqueues):
            time.sleep(gap)  # spacing only: lets every worker go back to sleep
            job_id = f"pick-{i + WARMUP:04d}"
            stamp = stamps / job_id
            job = {"id": job_id, "command": f"date +%s%N > {stamp}"}
            called = time.time_ns()
            q("enqueue", json.dumps(job))
            back = time.time_ns()

            def started(path: Path = stamp) -> int | None:
                with contextlib.suppress(OSError):
                    text = path.read_text()
                    if text.endswith("\n"):
                        return int(text)
                return None

            began = wait_until(started, 30, f"job {job_id} to start", 0.0005)
            if i >= 0:
                out["start"].append((began - back) / 1e6)
                out["call"].append((back - called) / 1e6)
                returned[job_id] = back / 1e6
                began_ms[job_id] = began / 1e6

        def all_done() -> list[dict[str, object]] | None:
            jobs: list[dict[str, object]] = json.loads(q("list", "--json", "--limit", "0"))
            return jobs if all(j["state"] == "completed" for j in jobs) else None

        for row in wait_until(all_done, 30, "every job completed", 0.1):
            job_id, started_at, created_at = str(row["id"]), row["started_at"], row["created_at"]
            if job_id in returned and isinstance(started_at, str):
                out["claim"].append(iso_ms(started_at) - returned[job_id])
            if job_id in began_ms and isinstance(created_at, str):
                out["commit"].append(began_ms[job_id] - iso_ms(created_at))
        return out
    finally:
        with contextlib.suppress(Exception):
            q("worker", "stop", "--timeout", "10")
        kill_leftovers(f"QUEUECTL_HOME={home}")
        if cleanup is not None:
            with contextlib.suppress(Exception):
                cleanup()
        shutil.rmtree(home, ignore_errors=True)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[int(p * (len(ordered) - 1))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--enqueues", type=int, default=100, help="measured enqueues")
    parser.add_argument("--workers", type=int, default=4, help="idle workers")
    parser.add_argument("--gap", type=float, default=0.2, help="seconds between enqueues")
    parser.add_argument("--backends", default="sqlite,postgres",
                        help="comma-separated: sqlite, postgres")
    parser.add_argument("--quick", action="store_true", help="20 enqueues")
    args = parser.parse_args(argv)
    if args.quick:
        args.enqueues = 20

    header(f"pickup latency, {args.enqueues} enqueues, {args.workers} idle workers")
    results: dict[str, dict[str, list[float]]] = {}
    for backend in args.backends.split(","):
        try:
            results[backend] = measure(backend, args.enqueues, args.workers, args.gap)
            print(f"  {backend}: done (load {os.getloadavg()[0]:.2f})", flush=True)
        except Skip as exc:
            print(f"  {backend}: skipped: {exc}", flush=True)

    print()
    print(f"pickup latency in ms after `queuectl enqueue` returned, {args.enqueues} jobs one at "
          f"a time, {args.gap:g}s apart, {args.workers} idle workers")
    head = (f"{'backend':<9} {'what':<34} {'median':>8} {'p95':>8} {'min':>8} {'max':>8}  "
            "target")
    print(head)
    print("-" * len(head))
    names = {"start": "command started, after return", "claim": "claimed, after return",
             "commit": "command started, after created_at", "call": "enqueue call itself"}
    for backend, data in results.items():
        for key in ("start", "claim", "commit", "call"):
            values = data[key]
            if not values:
                continue
            median = statistics.median(values)
            target = "-"
            if key in ("start", "commit"):
                target = f"median <= {TARGET_MS:g} ms {'met' if median <= TARGET_MS else 'NOT met'}"
            print(f"{backend:<9} {names[key]:<34} {median:>8.1f} {pct(values, 0.95):>8.1f} "
                  f"{min(values):>8.1f} {max(values):>8.1f}  {target}")
    print(f"(load average {os.getloadavg()[0]:.2f} at the end)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
