"""Helpers shared by the benchmark scripts (imported as a sibling module:
each script runs as ``python benchmarks/bench_X.py``, which puts this
directory on ``sys.path``)."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

#: The queuectl installed next to the Python running the benchmark.
QUEUECTL = Path(sys.executable).parent / "queuectl"

T = TypeVar("T")


class Skip(Exception):
    """A system or backend that cannot run here (not installed, unreachable)."""


def header(title: str, extra: str = "") -> None:
    """The first line of every script: CPUs and load, so noisy runs show."""
    print(f"{title}: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} "
          f"(1 min) at start, Python {sys.version.split()[0]}{extra}", flush=True)


def private_dir(prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o700)  # workers refuse group/other-writable homes
    return path


def wait_until(predicate: Callable[[], T | None], timeout: float, what: str,
               interval: float) -> T:
    """Call ``predicate`` until it returns something truthy; raise after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what} "
                               f"(last value {value!r})")
        time.sleep(interval)


def pids_with_env(marker: str) -> list[int]:
    """Live processes (not this one) with ``marker`` (``NAME=value``) in
    their environment: the ones this benchmark started."""
    wanted = marker.encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if wanted not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state not in ("Z", "X"):
            found.append(int(entry.name))
    return found


def kill_leftovers(marker: str, grace: float = 10.0) -> int:
    """Wait up to ``grace`` s for processes carrying ``marker`` to exit,
    then SIGKILL the rest (by pid). Returns how many had to be killed."""
    with contextlib.suppress(TimeoutError):
        wait_until(lambda: not pids_with_env(marker), grace, "processes to exit", 0.1)
    left = pids_with_env(marker)
    for pid in left:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    if left:
        print(f"  warning: killed {len(left)} leftover process(es): {left}", flush=True)
    return len(left)
