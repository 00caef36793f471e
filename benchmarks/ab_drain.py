"""Interleaved A/B of the drain benchmark between two installs of queuectl.

    python benchmarks/ab_drain.py --rounds 5 /path/to/venv-before/bin/python \\
        /path/to/venv-after/bin/python

Each round runs ``bench_drain.py --repeats 1 --only xargs,queuectl`` once with
each interpreter (so each uses the ``queuectl`` installed next to it), in turn,
and keeps queuectl's ratio to the ``xargs`` run of the same invocation. The
table shows every round's ratio and the median per install and workload: on a
shared machine whose speed drifts, rounds taken side by side compare two
versions better than two full runs an hour apart. Not part of ``nox -s bench``
(it needs two installs); see docs/performance.md, "Drain".
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
from pathlib import Path

DRAIN = Path(__file__).with_name("bench_drain.py")
ROW = re.compile(r"^(true|sleep 0\.01)\s+queuectl.*?\s([\d.]+)x\s")


def one_round(python: str, timeout: float) -> dict[str, float]:
    """queuectl's ratio to xargs, per workload, from one bench_drain.py run."""
    out = subprocess.run([python, str(DRAIN), "--repeats", "1", "--only", "xargs,queuectl"],
                         capture_output=True, text=True, timeout=timeout, check=True).stdout
    ratios = {m.group(1): float(m.group(2)) for m in map(ROW.match, out.splitlines()) if m}
    if len(ratios) != 2:
        raise SystemExit(f"ab_drain: no ratios in the output of {python}:\n{out}")
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pythons", nargs="+", help="interpreters of the installs to compare")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=600, help="per run, seconds")
    args = parser.parse_args()
    ratios: dict[tuple[str, str], list[float]] = {}
    for number in range(1, args.rounds + 1):
        for python in args.pythons:
            for workload, ratio in one_round(python, args.timeout).items():
                ratios.setdefault((python, workload), []).append(ratio)
        print(f"round {number} of {args.rounds} done", file=sys.stderr, flush=True)
    print(f"{'install':<45} {'workload':<11} {'median':>7}  rounds")
    for (python, workload), values in sorted(ratios.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        rounds = ", ".join(f"{v:.2f}" for v in values)
        print(f"{python:<45} {workload:<11} {statistics.median(values):>6.2f}x  {rounds}")


if __name__ == "__main__":
    main()
