"""Drain: 4 workers run 1,000 short shell jobs, against xargs -P4, tsp and huey.

    python benchmarks/bench_drain.py [--jobs 1000] [--workers 4] [--repeats 3]
                                     [--only queuectl,xargs,tsp,huey] [--quick]

Two workloads, ``true`` and ``sleep 0.01``, each run by:

* ``xargs`` (the baseline, the physical floor): ``xargs -d '\\n' -P4 -n1 sh -c``
  fed the same ``--jobs`` command lines; wall time of the xargs process.
* queuectl: a fresh QUEUECTL_HOME (default SQLite backend, synchronous=FULL),
  ``queuectl worker start --count 4``, wait until ``status --json`` shows 4
  active workers, one ``queuectl enqueue --file``, poll the queue's SQLite
  file read-only (every ``--poll`` s, with a deadline; not ``status``, whose
  Python start-up every poll would load the machine the workers share) until
  every job is completed, check ``status --json`` once, then
  ``worker stop``. The figure is the span from the first claim to the last
  completion, read from the ``attempts`` table of the queue's SQLite file
  (``min(started_at)`` .. ``max(finished_at)``, ms resolution), so it leaves
  out worker start-up, the enqueue call and the polling interval.
* task-spooler (``tsp``, Debian package task-spooler): a private server
  (``TS_SOCKET`` in a temp dir) with ``tsp -S 4``; the commands are submitted
  one ``tsp -n sh -c CMD`` call each from one ``sh`` loop while the server
  already runs them; wall time from the first submit until ``tsp -l`` lists
  every job as finished (polled every 20 ms). tsp keeps one client process
  per queued job and blocks new submits at about 1,000 queued jobs; jobs
  drain while they are submitted, so 1,000 fit.
* huey (PyPI ``huey``, imported only in child processes): ``SqliteHuey``
  (fsync=True, i.e. synchronous=FULL; results not stored), a task that
  ``subprocess.run(cmd, shell=True)`` and appends its start and end times to
  a file; all jobs are enqueued first, then ``huey_consumer -w 4 -k process``
  is started; the figure is the span from the first task start to the last
  task end, like queuectl's.

tsp and huey are skipped with a message when they are not installed. Every
case is repeated ``--repeats`` times, interleaved (repeat 1 of every case,
then repeat 2, ...), and the table shows the median, the range and the ratio
of the median to xargs's median. Targets (issue 7): queuectl at most 1.5x
xargs for ``true`` and 1.05x for ``sleep 0.01``. ``--quick``: 200 jobs, one
repeat.

Everything started is stopped in a ``finally`` (``queuectl worker stop``,
``tsp -K``, SIGINT to the huey consumer), and any process left that carries
this run's QUEUECTL_HOME or temp dir in its environment is killed by pid.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from _benchutil import QUEUECTL, Skip, header, kill_leftovers, private_dir, wait_until

WORKLOADS = ("true", "sleep 0.01")
TARGETS = {"true": 1.5, "sleep 0.01": 1.05}
SYSTEMS = ("xargs", "queuectl", "tsp", "huey")

# ------------------------------------------------------------------ helpers

@dataclass
class Figures:
    """One case's measurements (seconds)."""

    values: list[float] = field(default_factory=list)
    extra: dict[str, list[float]] = field(default_factory=dict)
    skipped: str | None = None


# ------------------------------------------------------------------ systems

def run_xargs(command: str, jobs: int, workers: int, timeout: float) -> tuple[float, dict[
        str, float]]:
    data = (command + "\n") * jobs
    start = time.perf_counter()
    subprocess.run(["xargs", "-d", "\n", f"-P{workers}", "-n1", "sh", "-c"],
                   input=data.encode(), stdout=subprocess.DEVNULL, check=True, timeout=timeout)
    return time.perf_counter() - start, {}


def run_queuectl(command: str, jobs: int, workers: int, timeout: float, poll: float
                 ) -> tuple[float, dict[str, float]]:
    if not QUEUECTL.exists():
        raise Skip(f"no queuectl next to {sys.executable}")
    home = private_dir("bench-drain-q-")
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUEUECTL_")}
    env["QUEUECTL_HOME"] = str(home)

    def q(*args: str, limit: float = 60.0) -> str:
        # cwd: the home, not the caller's directory, which `python -m` (used
        # to spawn the workers) would put first on sys.path.
        proc = subprocess.run([str(QUEUECTL), *args], env=env, cwd=home, capture_output=True,
                              text=True, timeout=limit, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"queuectl {' '.join(args)} exited {proc.returncode}: "
                               f"{proc.stderr.strip()}")
        return proc.stdout

    def status() -> dict[str, int]:
        data: dict[str, int] = json.loads(q("status", "--json"))
        return data

    jobs_file = home / "jobs.jsonl"
    jobs_file.write_text("".join(json.dumps({"id": f"job-{i:06d}", "command": command}) + "\n"
                                 for i in range(jobs)))
    try:
        q("worker", "start", "--count", str(workers), limit=60)
        wait_until(lambda: status()["active_workers"] == workers, 30,
                   f"{workers} active workers", 0.1)
        start = time.perf_counter()
        q("enqueue", "--file", str(jobs_file), limit=timeout)
        enqueue_s = time.perf_counter() - start

        # Polled in the queue's file, read-only: a `queuectl status` call
        # every poll would start a Python process (tens of ms of CPU) on the
        # machine the workers share, an observer xargs does not have.
        db = sqlite3.connect(f"file:{home / 'queue.db'}?mode=ro", uri=True)

        def finished() -> bool:
            counts = dict(db.execute("SELECT state, count(*) FROM jobs GROUP BY state"))
            if counts.get("dead") or counts.get("failed"):
                raise RuntimeError(f"jobs failed: {counts}")
            return counts.get("completed") == jobs

        with contextlib.closing(db):
            wait_until(finished, timeout, f"{jobs} completed jobs", poll)
            wall = time.perf_counter() - start
            count, first, last = db.execute(
                "SELECT count(*), min(started_at), max(finished_at) FROM attempts").fetchone()
        if status()["completed"] != jobs:  # the CLI agrees
            raise RuntimeError(f"queuectl status does not show {jobs} completed jobs")
        if count != jobs:
            raise RuntimeError(f"{count} attempts for {jobs} jobs")
        return (last - first) / 1000, {"enqueue": enqueue_s, "wall": wall}
    finally:
        with contextlib.suppress(Exception):
            q("worker", "stop", "--timeout", "10", limit=60)
        kill_leftovers(f"QUEUECTL_HOME={home}")
        shutil.rmtree(home, ignore_errors=True)


def run_tsp(command: str, jobs: int, workers: int, timeout: float) -> tuple[float, dict[
        str, float]]:
    tsp = shutil.which("tsp")
    if tsp is None:
        raise Skip("tsp not installed (apt-get install task-spooler)")
    scratch = private_dir("bench-drain-tsp-")
    env = {**os.environ, "TS_SOCKET": str(scratch / "socket"), "TMPDIR": str(scratch),
           "TS_MAXFINISHED": str(jobs + 10), "TS_SLOTS": str(workers)}
    env.pop("TS_ONFINISH", None)
    env.pop("TS_ENV", None)

    def finished() -> bool:
        out = subprocess.run([tsp, "-l"], env=env, capture_output=True, text=True,
                             timeout=30, check=True).stdout
        return sum(1 for line in out.splitlines()[1:] if " finished " in line) == jobs

    submit: subprocess.Popen[bytes] | None = None
    try:
        subprocess.run([tsp, "-S", str(workers)], env=env, check=True, timeout=30)
        start = time.perf_counter()
        submit = subprocess.Popen(
            ["sh", "-c", 'while IFS= read -r c; do tsp -n sh -c "$c" >/dev/null; done'],
            stdin=subprocess.PIPE, env=env)
        assert submit.stdin is not None
        submit.stdin.write(((command + "\n") * jobs).encode())
        submit.stdin.close()
        submit.wait(timeout=timeout)
        submit_s = time.perf_counter() - start
        wait_until(finished, timeout, f"tsp to finish {jobs} jobs", 0.02)
        return time.perf_counter() - start, {"submit": submit_s}
    finally:
        if submit is not None and submit.poll() is None:
            submit.kill()
            submit.wait()
        subprocess.run([tsp, "-K"], env=env, capture_output=True, timeout=30, check=False)
        kill_leftovers(f"TS_SOCKET={env['TS_SOCKET']}")
        shutil.rmtree(scratch, ignore_errors=True)


HUEY_TASKS = '''
import os
import subprocess
import time

from huey import SqliteHuey

huey = SqliteHuey("bench", filename=os.environ["BENCH_HUEY_DB"], fsync=True, results=False)
LOG = os.environ["BENCH_HUEY_LOG"]


@huey.task()
def run(command):
    start = time.time()
    subprocess.run(command, shell=True)
    end = time.time()
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{start:.6f} {end:.6f}\\n".encode())
    finally:
        os.close(fd)
'''

HUEY_ENQUEUE = textwrap.dedent('''
    import sys
    import bench_huey_tasks
    for line in sys.stdin.read().splitlines():
        bench_huey_tasks.run(line)
''')


def run_huey(command: str, jobs: int, workers: int, timeout: float) -> tuple[float, dict[
        str, float]]:
    if importlib.util.find_spec("huey") is None:
        raise Skip(f"huey not installed for {sys.executable} (pip install huey)")
    scratch = private_dir("bench-drain-huey-")
    log = scratch / "times.log"
    env = {**os.environ, "PYTHONPATH": str(scratch), "BENCH_HUEY_DB": str(scratch / "huey.db"),
           "BENCH_HUEY_LOG": str(log)}
    (scratch / "bench_huey_tasks.py").write_text(HUEY_TASKS)
    consumer: subprocess.Popen[bytes] | None = None
    try:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", HUEY_ENQUEUE], input=((command + "\n") * jobs
                                                                    ).encode(),
                       env=env, cwd=scratch, check=True, timeout=timeout)
        enqueue_s = time.perf_counter() - start
        with (scratch / "consumer.log").open("wb") as out:
            consumer = subprocess.Popen(
                [sys.executable, "-m", "huey.bin.huey_consumer", "bench_huey_tasks.huey",
                 "-w", str(workers), "-k", "process"],
                env=env, cwd=scratch, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True)

        def done() -> bool:
            if consumer is not None and consumer.poll() is not None:
                raise RuntimeError("huey consumer exited: "
                                   + (scratch / "consumer.log").read_text()[-2000:])
            return log.exists() and log.read_bytes().count(b"\n") >= jobs

        wait_until(done, timeout, f"huey to run {jobs} tasks", 0.05)
        times = [tuple(map(float, line.split())) for line in log.read_text().splitlines()]
        first = min(t[0] for t in times)
        last = max(t[1] for t in times)
        return last - first, {"enqueue": enqueue_s}
    finally:
        if consumer is not None and consumer.poll() is None:
            consumer.send_signal(signal.SIGINT)  # graceful: finish and exit
            try:
                consumer.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(consumer.pid, signal.SIGKILL)  # its own session, pgid = pid
                consumer.wait()
        kill_leftovers(f"BENCH_HUEY_LOG={log}")
        shutil.rmtree(scratch, ignore_errors=True)


# ------------------------------------------------------------------ main

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000, help="jobs per drain")
    parser.add_argument("--workers", type=int, default=4, help="parallel workers / slots")
    parser.add_argument("--repeats", type=int, default=3, help="repeats (median reported)")
    parser.add_argument("--poll", type=float, default=0.1,
                        help="seconds between polls of the queue's file for completion")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="deadline for one drain, seconds")
    parser.add_argument("--only", default=",".join(SYSTEMS),
                        help=f"comma-separated subset of {','.join(SYSTEMS)}")
    parser.add_argument("--quick", action="store_true", help="200 jobs, 1 repeat")
    args = parser.parse_args(argv)
    if args.quick:
        args.jobs, args.repeats = 200, 1
    systems = [s for s in SYSTEMS if s in args.only.split(",")]
    if "xargs" not in systems:
        systems.insert(0, "xargs")  # the baseline of every ratio

    runners: dict[str, Callable[[str], tuple[float, dict[str, float]]]] = {
        "xargs": lambda cmd: run_xargs(cmd, args.jobs, args.workers, args.timeout),
        "queuectl": lambda cmd: run_queuectl(cmd, args.jobs, args.workers, args.timeout,
                                             args.poll),
        "tsp": lambda cmd: run_tsp(cmd, args.jobs, args.workers, args.timeout),
        "huey": lambda cmd: run_huey(cmd, args.jobs, args.workers, args.timeout),
    }
    header(f"drain {args.jobs:,} jobs with {args.workers} workers")
    results = {(w, s): Figures() for w in WORKLOADS for s in systems}
    for rep in range(args.repeats):
        for workload in WORKLOADS:
            for system in systems:
                fig = results[(workload, system)]
                if fig.skipped:
                    continue
                try:
                    value, extra = runners[system](workload)
                except Skip as exc:
                    fig.skipped = str(exc)
                    print(f"  {system}: skipped: {exc}", flush=True)
                    continue
                fig.values.append(value)
                for key, v in extra.items():
                    fig.extra.setdefault(key, []).append(v)
                more = "".join(f", {k} {v:.3f}s" for k, v in extra.items())
                print(f"  repeat {rep + 1} {workload!r:<12} {system:<9} {value:7.3f}s{more} "
                      f"(load {os.getloadavg()[0]:.2f})", flush=True)

    labels = {
        "xargs": f"xargs -P{args.workers} sh -c (baseline)",
        "queuectl": f"queuectl, {args.workers} workers",
        "tsp": f"tsp -S {args.workers}",
        "huey": f"huey SqliteHuey -w {args.workers} -k process",
    }
    measures = {
        "xargs": "wall",
        "queuectl": "first claim..last completion",
        "tsp": "first submit..all finished",
        "huey": "first start..last end",
    }
    print()
    print(f"drain {args.jobs:,} jobs, {args.workers} in parallel, median of {args.repeats} "
          f"repeat(s); ratio = median / xargs median")
    head = (f"{'workload':<11} {'system':<34} {'median':>8} {'min..max':>16} {'ratio':>7}  "
            f"{'measured as':<29} target")
    print(head)
    print("-" * len(head))
    for workload in WORKLOADS:
        base = statistics.median(results[(workload, "xargs")].values)
        for system in systems:
            fig = results[(workload, system)]
            if fig.skipped or not fig.values:
                print(f"{workload:<11} {labels[system]:<34} skipped: {fig.skipped}")
                continue
            median = statistics.median(fig.values)
            ratio = median / base
            spread = f"{min(fig.values):.3f}..{max(fig.values):.3f}s"
            target = "-"
            if system == "queuectl":
                goal = TARGETS[workload]
                target = f"<= {goal:g}x {'met' if ratio <= goal else 'NOT met'}"
            print(f"{workload:<11} {labels[system]:<34} {median:>7.3f}s {spread:>16} "
                  f"{ratio:>6.2f}x  {measures[system]:<29} {target}")
    for workload in WORKLOADS:
        fig = results.get((workload, "queuectl"), Figures())
        if fig.extra:
            parts = ", ".join(f"{k} {statistics.median(v):.3f}s" for k, v in fig.extra.items())
            print(f"queuectl {workload!r}: median {parts} (wall = enqueue start..a poll of "
                  f"the file saw all done, poll every {args.poll:g}s)")
    print(f"(load average {os.getloadavg()[0]:.2f} at the end)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
