"""The dashboard and `status` at a million stored jobs, against the same
calls on an empty store, in the same run.

    python benchmarks/bench_views_at_scale.py [--backend sqlite|postgres]
        [--jobs 1000000] [--recent 5000] [--runs 7] [--quick]

Fills a fresh store (SQLite in a temporary home, or a PostgreSQL schema of
its own in QUEUECTL_TEST_POSTGRES_DSN) with the store's own bulk insert,
not the CLI: --jobs jobs in 10 queues, mostly completed with one attempt
each (finished over the last 30 days, --recent of them in the last hour),
some pending, dead (a failed attempt), failed and cancelled. Then it
times, empty and full:

* the dashboard's overview page, `/metrics` and the first page of jobs
  (also filtered by state and by queue), as server time: the ASGI app
  called in this process (Starlette's TestClient);
* `queuectl status`, `queuectl status --queue q1` and `queuectl list
  --limit 10`, as real processes (the start-up cache warm);

each the median of --runs, the empty and the full store's calls taken
turn about (the machine is shared: its load then hits both alike).

Targets: each page <= 200 ms at 1,000,000 jobs (issue 19); `status` and
`status --queue q1` within 1.5x of their empty-store time (issue 21 item
16). The overview and `/metrics` also read the attempts of their window
(the last hour, the last 5 minutes), so they grow with the recent
throughput, not with the store: --recent says how many.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from _benchutil import QUEUECTL, header, private_dir

from queuectl_core.app import App
from queuectl_core.config import resolve_config
from queuectl_core.models import Attempt, Job, JobState
from queuectl_core.timeutil import now_ms

QUEUES = [f"q{i}" for i in range(10)]
DAY = 86_400_000
PAGES = {"overview": "/", "/metrics": "/metrics", "jobs, first page": "/jobs",
         "jobs, state=dead": "/jobs?state=dead", "jobs, queue=q1": "/jobs?queue=q1",
         "/api/overview": "/api/overview"}
TARGET_MS = 200.0
TARGET_RATIO = 1.5


def records(count: int, recent: int, now: int) -> Iterator[tuple[Job, list[Attempt]]]:
    """The jobs to store, oldest first, each with its attempt history."""
    spread = 30 * DAY
    for i in range(count):
        queue = QUEUES[i % len(QUEUES)]
        kind = i % 100
        if i >= count - recent:
            done = now - (count - i) * 3_600_000 // max(recent, 1)
        else:
            done = now - spread + i * (spread - 3_600_000) // count
        start = done - 150 - i % 500
        base: dict[str, Any] = {
            "id": f"j{i:07d}", "command": f"./task.sh {i % 977}", "queue": queue,
            "max_retries": 0, "created_at": start - 1000, "run_at": start - 10}
        if kind < 90 or i >= count - recent:
            attempt = Attempt(job_id=base["id"], number=1, worker_id="bench:1:w",
                              started_at=start, finished_at=done, outcome="completed",
                              exit_code=0)
            yield Job(**base, state=JobState.COMPLETED, attempts=1, updated_at=done,
                      started_at=start, finished_at=done, exit_code=0), [attempt]
        elif kind < 93:
            attempt = Attempt(job_id=base["id"], number=1, worker_id="bench:1:w",
                              started_at=start, finished_at=done, outcome="failed",
                              exit_code=1, error="command exited with code 1")
            yield Job(**base, state=JobState.DEAD, attempts=1, updated_at=done,
                      started_at=start, finished_at=done, exit_code=1,
                      last_error="command exited with code 1"), [attempt]
        elif kind < 95:
            yield Job(**{**base, "max_retries": 3}, state=JobState.FAILED, attempts=1,
                      updated_at=done), [Attempt(
                          job_id=base["id"], number=1, worker_id="bench:1:w",
                          started_at=start, finished_at=done, outcome="failed",
                          exit_code=1)]
        elif kind < 96:
            yield Job(**base, state=JobState.CANCELLED, updated_at=done, finished_at=done,
                      last_error="cancelled by request"), []
        else:
            yield Job(**{**base, "run_at": now + DAY * (i % 2)}, state=JobState.PENDING,
                      updated_at=start), []


def fill(app: App, count: int, recent: int) -> float:
    store = app.ledger.store
    start = time.perf_counter()
    batch: list[tuple[Job, list[Attempt]]] = []
    for record in records(count, recent, now_ms()):
        batch.append(record)
        if len(batch) == 20_000:
            store.insert(batch)
            batch = []
            print(".", end="", flush=True)
    if batch:
        store.insert(batch)
    print(flush=True)
    return time.perf_counter() - start


def interleaved(calls: dict[str, tuple[Callable[[], Any], Callable[[], Any]]], runs: int
                ) -> tuple[dict[str, float], dict[str, float]]:
    """Median ms of each (empty, full) pair of calls, the two taken turn
    about, run after run, so that the machine's load hits both alike."""
    times: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in calls}
    for pair in calls.values():
        for call in pair:
            call()  # warm: first imports, caches
    for _ in range(runs):
        for name, pair in calls.items():
            for side, call in enumerate(pair):
                start = time.perf_counter()
                call()
                times[name][side].append((time.perf_counter() - start) * 1000)
    return ({name: statistics.median(t[0]) for name, t in times.items()},
            {name: statistics.median(t[1]) for name, t in times.items()})


def page_calls(app: App, stack: contextlib.ExitStack) -> dict[str, Callable[[], Any]]:
    from fastapi.testclient import TestClient

    from queuectl_web.reader import Reader
    from queuectl_web.server import create_app

    client = stack.enter_context(TestClient(create_app(Reader(app))))

    def get(path: str) -> Callable[[], Any]:
        def call() -> None:
            answer = client.get(path)
            assert answer.status_code == 200, (path, answer.text[:300])
        return call

    return {name: get(path) for name, path in PAGES.items()}


def cli_calls(env: dict[str, str]) -> dict[str, Callable[[], Any]]:
    def run(argv: list[str]) -> Callable[[], Any]:
        return lambda: subprocess.run([str(QUEUECTL), *argv], env=env, check=True,
                                      stdout=subprocess.DEVNULL)

    return {"queuectl " + " ".join(argv): run(argv)
            for argv in (["status"], ["status", "--queue", "q1"], ["list", "--limit", "10"])}


def make_home(backend: str, label: str) -> tuple[Path, dict[str, str], str | None]:
    home = private_dir(f"queuectl-views-{label}-")
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUEUECTL_")}
    env["QUEUECTL_HOME"] = str(home)
    schema = None
    if backend == "postgres":
        schema = f"bench_views_{label}_{os.getpid()}"
        dsn = os.environ.get("QUEUECTL_TEST_POSTGRES_DSN", "postgresql://127.0.0.1:5432/test")
        env["QUEUECTL_POSTGRES_DSN"] = os.environ["QUEUECTL_POSTGRES_DSN"] = dsn
        (home / "queuectl.yaml").write_text(
            f"backend: postgres\nbackends:\n  postgres:\n    schema: {schema}\n")
    return home, env, schema


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--recent", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="100,000 jobs, 5 runs")
    args = parser.parse_args()
    if args.quick:
        args.jobs, args.recent, args.runs = 100_000, 1000, 5
    header("views at scale", f", {args.backend}, {args.jobs:,} jobs")
    with server_lock(args.backend):
        run(args)


def server_lock(backend: str) -> contextlib.AbstractContextManager[None]:
    """For PostgreSQL, the test suite's shared lock on the server
    (tests/postgres_lock.py), so that a test restarting it waits for us."""
    if backend != "postgres":
        return contextlib.nullcontext()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.postgres_lock import postgres_shared

    dsn = os.environ.get("QUEUECTL_TEST_POSTGRES_DSN", "postgresql://127.0.0.1:5432/test")
    return postgres_shared(dsn)


def run(args: argparse.Namespace) -> None:
    homes = {label: make_home(args.backend, label) for label in ("empty", "full")}
    apps: dict[str, App] = {}
    try:
        with contextlib.ExitStack() as stack:
            for label, (home, env, _) in homes.items():
                apps[label] = App(resolve_config(home=str(home), config=None, backend=None))
                apps[label].ledger.store.describe()
                subprocess.run([str(QUEUECTL), "plugins"], env=env, check=True,
                               stdout=subprocess.DEVNULL)  # warms the start-up cache
            print(f"filling {args.jobs:,} jobs", end="", flush=True)
            took = fill(apps["full"], args.jobs, args.recent)
            print(f"filled in {took:.1f} s ({args.jobs / took:,.0f} jobs/s)")
            schema = homes["full"][2]
            if schema is not None:
                with apps["full"].ledger.store.session.cursor() as cur:  # type: ignore[attr-defined]
                    cur.execute(f'ANALYZE "{schema}".jobs')
                    cur.execute(f'ANALYZE "{schema}".attempts')
            pages = {label: page_calls(app, stack) for label, app in apps.items()}
            clis = {label: cli_calls(homes[label][1]) for label in apps}
            calls = {name: (pages["empty"][name], pages["full"][name]) for name in PAGES}
            calls.update({name: (clis["empty"][name], clis["full"][name])
                          for name in clis["empty"]})
            empty, full = interleaved(calls, args.runs)
    finally:
        for app in apps.values():
            app.close()
        for home, env, schema in homes.values():
            if schema is not None:
                import psycopg

                with psycopg.connect(env["QUEUECTL_POSTGRES_DSN"], autocommit=True) as conn:
                    conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            shutil.rmtree(home, ignore_errors=True)
    print(f"\n| {args.backend}: median of {args.runs} | empty | {args.jobs:,} jobs | ratio "
          "| target |")
    print("|---|---|---|---|---|")
    for name in empty:
        ratio = full[name] / empty[name]
        if name.startswith("queuectl status"):
            target = f"<= {TARGET_RATIO}x"
            ok = ratio <= TARGET_RATIO
        elif name.startswith("queuectl"):
            target, ok = "-", True
        else:
            target = f"<= {TARGET_MS:.0f} ms"
            ok = full[name] <= TARGET_MS
        print(f"| {name} | {empty[name]:.1f} ms | {full[name]:.1f} ms | {ratio:.2f}x | "
              f"{target}{'' if ok else ' NOT met'} |")


if __name__ == "__main__":
    main()
