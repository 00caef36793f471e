"""How long one `queuectl` call takes, against the interpreter's own start-up.

    python benchmarks/bench_cli_startup.py [--runs 50]

Runs `python -c pass` (the baseline), `queuectl --help`, `queuectl status`
and `queuectl enqueue '{...}'` interleaved, `--runs` times each, against a
fresh QUEUECTL_HOME on the default SQLite backend (durable: synchronous=FULL),
and prints the median and p95 wall time of each with its ratio to the
baseline's median. The target (issue 7) is at most 3x for each. The machine
is shared and noisy, so read the ratios, which are measured in the same run.

The queuectl used is the one installed next to this Python
(``Path(sys.executable).parent / "queuectl"``), so run it with the Python of
the environment you want to measure (a regular, not editable, install shows
what users get: editable installs add import hooks that cost a few ms).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

QUEUECTL = Path(sys.executable).parent / "queuectl"
TARGET = 3.0


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   check=True)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    if not QUEUECTL.exists():
        print(f"skipped: no queuectl next to {sys.executable}")
        return 0
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "QUEUECTL_HOME": home}
        env.pop("QUEUECTL_BACKEND", None)
        env.pop("QUEUECTL_CONFIG", None)
        counter = iter(range(10**9))
        cases: dict[str, Callable[[], list[str]]] = {
            "python -c pass (baseline)": lambda: [sys.executable, "-c", "pass"],
            "queuectl --help": lambda: [str(QUEUECTL), "--help"],
            "queuectl status": lambda: [str(QUEUECTL), "status"],
            "queuectl enqueue '{...}'": lambda: [
                str(QUEUECTL), "enqueue",
                json.dumps({"id": f"job-{next(counter)}", "command": "true"})],
        }
        # Warm up: creates the store and the plugin discovery cache.
        for make in cases.values():
            timed(make(), env)
        samples: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.runs):
            for name, make in cases.items():
                samples[name].append(timed(make(), env))
    base = statistics.median(samples["python -c pass (baseline)"])
    print(f"{'command':<28} {'median':>9} {'p95':>9} {'ratio':>7}  target")
    for name, values in samples.items():
        values.sort()
        median = statistics.median(values)
        p95 = values[int(0.95 * (len(values) - 1))]
        ratio = median / base
        verdict = "-" if name.startswith("python") else (
            f"<= {TARGET:g}x {'met' if ratio <= TARGET else 'NOT met'}")
        print(f"{name:<28} {median * 1000:>7.1f}ms {p95 * 1000:>7.1f}ms {ratio:>6.2f}x  "
              f"{verdict}")
    print(f"({args.runs} runs each, interleaved; {os.cpu_count()} CPUs; "
          f"load average {os.getloadavg()[0]:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
