"""Flat cost at a million jobs (issue 21, items 15 and 16).

    python benchmarks/scale.py [--jobs 1000000] [--backends sqlite,postgres] [--runs 5]

For each backend, on a fresh QUEUECTL_HOME:

1. times ``list --limit 10``, ``status`` and ``status --queue q1`` on the
   empty store (the median of ``--runs`` calls each);
2. writes ``--jobs`` JSON lines (``{"id": "job-0000001", "command": "true",
   "queue": "qN"}``, ten queues) and runs ``queuectl enqueue --file`` on
   them once: wall time, jobs/s, jobs per CPU second (user + system, which
   a loaded machine disturbs less) and the command's peak RSS (``wait4``);
3. times the three reads again on the full store.

It prints one table per backend: each figure now, the issue's "before"
figure where it gave one, and the full-store / empty-store ratio of each
read (the target: within 1.5x for ``status``; ``list --limit 10`` flat).
The issue's figures were measured on this kind of machine (2 cores, shared)
with the code before the fix; the machine is noisy, so the ratios, measured
in the same run, are what to read. PostgreSQL uses the server of
``QUEUECTL_TEST_POSTGRES_DSN`` (default ``postgresql://127.0.0.1:5432/test``)
in a schema of its own, dropped at the end; it is skipped, saying why, when
unreachable.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _benchutil import QUEUECTL, Skip, header, private_dir

#: What issue 21 measured before the fix (1,000,000 jobs, SQLite).
BEFORE = {
    "enqueue --file: seconds": "44",
    "enqueue --file: jobs/s": "22,500",
    "enqueue --file: peak RSS MB": "777",
    "status, empty: ms": "~40",
    "status, full: ms": "120",
    "status --queue q1, empty: ms": "~40",
    "status --queue q1, full: ms": "380",
    "list --limit 10, full: ms": "-",
}

READS = {"list --limit 10": ["list", "--limit", "10"], "status": ["status"],
         "status --queue q1": ["status", "--queue", "q1"]}


def run(env: dict[str, str], *args: str, stdin: Path | None = None
        ) -> tuple[float, int, float]:
    """Run ``queuectl ARGS``: (wall seconds, peak RSS in KiB, CPU seconds)."""
    started = time.perf_counter()
    with open(stdin or os.devnull, "rb") as source:
        proc = subprocess.Popen([str(QUEUECTL), *args], env=env, stdin=source,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        assert proc.stderr is not None
        err = proc.stderr.read()
        _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"queuectl {' '.join(args)} exited {proc.returncode}: "
                         f"{err.decode(errors='replace')}")
    return elapsed, usage.ru_maxrss, usage.ru_utime + usage.ru_stime


def reads(env: dict[str, str], runs: int) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in READS}
    for _ in range(runs):  # interleaved
        for name, args in READS.items():
            times[name].append(run(env, *args)[0])
    return {name: statistics.median(values) for name, values in times.items()}


def backend_env(backend: str, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUEUECTL_")}
    env.update(QUEUECTL_HOME=str(home), QUEUECTL_BACKEND=backend)
    if backend == "postgres":
        try:
            import psycopg
        except ImportError as exc:
            raise Skip(f"psycopg is not installed ({exc})") from None
        dsn = os.environ.get("QUEUECTL_TEST_POSTGRES_DSN", "postgresql://127.0.0.1:5432/test")
        try:
            with psycopg.connect(dsn, connect_timeout=3):
                pass
        except Exception as exc:
            raise Skip(f"PostgreSQL not reachable at {dsn} ({type(exc).__name__})") from None
        env["QUEUECTL_POSTGRES_DSN"] = dsn
        (home / "queuectl.yaml").write_text(
            f"backends:\n  postgres:\n    schema: qscale_{os.getpid()}\n")
    return env


def drop_schema(env: dict[str, str]) -> None:
    if "QUEUECTL_POSTGRES_DSN" in env:
        import psycopg

        with psycopg.connect(env["QUEUECTL_POSTGRES_DSN"], autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS qscale_{os.getpid()} CASCADE")


def measure(backend: str, jobs_file: Path, jobs: int, runs: int) -> None:
    home = private_dir(f"queuectl-scale-{backend}-")
    try:
        env = backend_env(backend, home)
    except Skip as why:
        print(f"\n{backend}: skipped: {why}")
        shutil.rmtree(home, ignore_errors=True)
        return
    try:
        run(env, "status")  # creates the store
        empty = reads(env, runs)
        seconds, rss_kib, cpu = run(env, "enqueue", "--file", "-", stdin=jobs_file)
        full = reads(env, runs)
    finally:
        drop_schema(env)
        shutil.rmtree(home, ignore_errors=True)
    rows = [
        ("enqueue --file: seconds", f"{seconds:.1f}", ""),
        ("enqueue --file: jobs/s", f"{jobs / seconds:,.0f}", ""),
        ("enqueue --file: jobs/CPU-s", f"{jobs / cpu:,.0f}",
         "user + system time: less sensitive to a loaded machine"),
        ("enqueue --file: peak RSS MB", f"{rss_kib / 1024:.0f}", ""),
    ]
    for name in READS:
        rows.append((f"{name}, empty: ms", f"{empty[name] * 1000:.0f}", ""))
        rows.append((f"{name}, full: ms", f"{full[name] * 1000:.0f}",
                     f"{full[name] / empty[name]:.2f}x the empty store"))
    print(f"\n{backend}, {jobs:,} jobs ({runs} runs of each read, median)")
    print(f"{'':<32} {'now':>10} {'before':>10}  ratio")
    for name, now, ratio in rows:
        before = BEFORE.get(name, "-") if backend == "sqlite" and jobs == 1_000_000 else "-"
        print(f"{name:<32} {now:>10} {before:>10}  {ratio}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if not QUEUECTL.exists():
        print(f"skipped: no queuectl next to {sys.executable}")
        return 0
    header("scale", f"; {args.jobs:,} jobs")
    work = private_dir("queuectl-scale-")
    try:
        jobs_file = work / "jobs.jsonl"
        with jobs_file.open("w") as out:
            for i in range(args.jobs):
                out.write(json.dumps({"id": f"job-{i:07d}", "command": "true",
                                      "queue": f"q{i % 10}"}) + "\n")
        for backend in args.backends.split(","):
            measure(backend.strip(), jobs_file, args.jobs, args.runs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
