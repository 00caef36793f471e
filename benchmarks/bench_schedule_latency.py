"""Firing latency of recurring schedules: from a tick to its job being
enqueued, and to its command starting.

    python benchmarks/bench_schedule_latency.py [--ticks 100] [--supervisors 2] [--workers 2]
                                          [--backends sqlite] [--quick]

For each backend: a fresh QUEUECTL_HOME, ``--supervisors`` supervisors of
``--workers`` workers each (``queuectl worker start``), then a schedule
``--every 1s --overlap allow --catchup all`` whose command is ``date +%s%N >
FILE``. After ``--ticks`` ticks the schedule is paused and, per job:

* enqueue latency: the job's ``created_at`` - its ``scheduled_for`` (the
  tick): the wake-up for the tick and the fire transaction (the target:
  within 1 s, the issue's promise; idle workers sleep until the tick, so it
  should be milliseconds);
* start latency: the command's start time (ns, written by ``date``) - the
  tick: the above, plus the claim and the spawn.

The script also checks what the tests check: every tick between the first
and the last fired exactly once. No baseline ratio: the target is absolute.
``--quick``: 10 ticks. PostgreSQL as in ``bench_pickup.py``
(``QUEUECTL_TEST_POSTGRES_DSN``, a schema of its own, dropped at the end).
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
from collections.abc import Callable

from _benchutil import QUEUECTL, Skip, header, kill_leftovers, private_dir, wait_until
from bench_pickup import iso_ms, postgres_setup

TARGET_MS = 1000.0


def measure(backend: str, ticks: int, supervisors: int, workers: int
            ) -> dict[str, list[float]]:
    if not QUEUECTL.exists():
        raise Skip(f"no queuectl next to {sys.executable}")
    home = private_dir(f"bench-schedule-{backend}-")
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUEUECTL_")}
    env["QUEUECTL_HOME"] = str(home)
    env["QUEUECTL_BACKEND"] = backend
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
        for n in range(supervisors):
            q("worker", "start", "--count", str(workers), *(["--add"] if n else []))
        total = supervisors * workers
        wait_until(lambda: json.loads(q("status", "--json"))["active_workers"] == total,
                   30, f"{total} active workers", 0.1)
        q("schedule", "add", "bench", "--every", "1s", "--overlap", "allow", "--catchup",
          "all", "--command", f"date +%s%N > {stamps}/$QUEUECTL_JOB_ID")

        def fired() -> list[dict[str, object]] | None:
            jobs = json.loads(q("list", "--schedule", "bench", "--json"))
            return jobs if len(jobs) >= ticks else None

        wait_until(fired, ticks + 60, f"{ticks} ticks", 1.0)
        q("schedule", "pause", "bench")
        jobs = json.loads(q("list", "--schedule", "bench", "--json"))
        wait_until(lambda: all(j["state"] == "completed" for j in
                               json.loads(q("list", "--schedule", "bench", "--json"))),
                   60, "every job to complete", 0.2)
        out: dict[str, list[float]] = {"enqueue": [], "start": []}
        seen = sorted(int(iso_ms(str(j["scheduled_for"]))) for j in jobs)
        if seen != list(range(seen[0], seen[-1] + 1, 1000)):
            raise RuntimeError("ticks were lost or fired twice: " + str(seen))
        for job in jobs:
            tick = iso_ms(str(job["scheduled_for"]))
            out["enqueue"].append(iso_ms(str(job["created_at"])) - tick)
            began = int((stamps / str(job["id"])).read_text()) / 1e6
            out["start"].append(began - tick)
        return out
    finally:
        with contextlib.suppress(Exception):
            subprocess.run([str(QUEUECTL), "worker", "stop", "--timeout", "10"], env=env,
                           capture_output=True, timeout=60, check=False)
        kill_leftovers(f"QUEUECTL_HOME={home}")
        if cleanup is not None:
            with contextlib.suppress(Exception):
                cleanup()
        shutil.rmtree(home, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ticks", type=int, default=100)
    parser.add_argument("--supervisors", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--backends", default="sqlite")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    ticks = 10 if args.quick else args.ticks
    header("schedule firing latency", f"; {ticks} ticks of --every 1s, "
           f"{args.supervisors}x{args.workers} workers")
    failed = False
    for backend in args.backends.split(","):
        try:
            out = measure(backend, ticks, args.supervisors, args.workers)
        except Skip as exc:
            print(f"{backend}: skipped ({exc})")
            continue
        for what, values in out.items():
            med, worst = statistics.median(values), max(values)
            ok = worst <= TARGET_MS
            failed |= not ok
            print(f"{backend:8} {what:8} latency over {len(values)} ticks: median "
                  f"{med:7.1f} ms, p90 {statistics.quantiles(values, n=10)[-1]:7.1f} ms, "
                  f"worst {worst:7.1f} ms  ({'within' if ok else 'OVER'} the "
                  f"{TARGET_MS:.0f} ms target)", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
