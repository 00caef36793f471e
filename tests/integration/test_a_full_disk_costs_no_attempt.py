"""A full disk stops nothing and charges nothing (issue 20 item 2): with the
home on a 2 MB tmpfs filled by job output, workers and their supervisor
live on, say "disk full" and back off; output that cannot be written is
dropped with a note; once space is freed every job completes on its first
attempt, and no temporary file is left behind. Needs root (mount)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from queuectl_core.worker.supervisor import Supervisor

from .conftest import Queue, pid_running

FILL = "head -c 600000 /dev/zero | tr '\\0' x"


@pytest.fixture
def small_home(tmp_path: Path) -> Iterator[Path]:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs",
                              str(home)], capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield home
    finally:
        with contextlib.suppress(OSError):
            subprocess.run(["umount", "-l", str(home)], check=False)


@pytest.mark.backends("sqlite", "json")
def test_a_full_disk_costs_no_attempt(small_home: Path, queue: Queue) -> None:
    assert queue.home == small_home
    queue.fast(output_max_bytes=0)
    queue.enqueue_many([{"id": f"big{i}", "command": FILL, "max_retries": 0}
                        for i in range(5)])
    group = queue.start_workers(2)
    log = queue.home / "logs" / "workers.log"
    queue.wait_until(lambda: "disk full" in log.read_text(), 30, "a disk-full warning")
    assert "internal error" not in log.read_text()
    assert all(pid_running(pid) for pid in [group.supervisor, *group.workers])
    for path in (queue.home / "logs" / "jobs").glob("*/attempt-*"):
        path.unlink()  # space again
    queue.wait_counts(timeout=60, completed=5)
    attempts = {job["id"]: job["attempts"] for job in queue.jobs()}
    assert attempts == {f"big{i}": 1 for i in range(5)}
    queue.stop_workers()
    assert "internal error" not in log.read_text()
    assert not [p for p in queue.home.rglob("*") if ".tmp" in p.name and p.is_file()]


def test_a_supervisor_restarts_workers_on_a_full_disk(small_home: Path) -> None:
    """The run file that names the workers cannot be rewritten on a full
    disk: the supervisor keeps going and writes it once there is space."""
    supervisor = Supervisor(home=small_home, count=1,
                            child_argv=[sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        first = supervisor._spawn()  # start() without its signal handlers
        supervisor._write_run_file()
        filler = small_home / "filler"
        with contextlib.suppress(OSError), filler.open("wb", buffering=0) as fh:
            while True:
                fh.write(b"x" * 65536)
        os.kill(first, signal.SIGKILL)
        supervisor.children[first][0].wait()
        supervisor._reap()
        supervisor._restart_at = 0.0
        supervisor._restart()  # spawns the new worker; the run file fails, quietly
        [second] = supervisor.children
        assert json.loads(supervisor.run_file.read_text())["workers"] == [first]
        assert not [p.name for p in supervisor.run_file.parent.iterdir() if ".tmp" in p.name]
        filler.unlink()
        supervisor._run_file_at = 0.0
        supervisor._restart()
        assert json.loads(supervisor.run_file.read_text())["workers"] == [second]
    finally:
        for proc, _ in supervisor.children.values():
            proc.kill()
            proc.wait()
