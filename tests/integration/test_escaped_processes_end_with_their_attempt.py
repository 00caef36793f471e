"""Processes that leave the job's process group end with its attempt
(issue 20 item 7): the worker is a child subreaper, so what a command starts
with ``setsid`` or a double fork becomes the worker's child once orphaned,
and is killed and reaped when the attempt ends: at a timeout (as at a cancel
or a forced stop: the same ``kill()``) and at a normal exit."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import Queue, pid_running, wait_until

# Each writes its pid, then sleeps in a session of its own: one started with
# setsid, one by a subshell that exits at once (a double fork).
ESCAPE = ("setsid sh -c 'echo $$ > {d}/setsid.pid; exec sleep 312' >/dev/null 2>&1 & "
          "(sh -c 'echo $$ > {d}/double.pid; exec setsid sleep 313' >/dev/null 2>&1 &); ")


def escaped_pids(directory: Path) -> list[int]:
    files = [directory / "setsid.pid", directory / "double.pid"]
    if not all(f.exists() and f.read_text().strip() for f in files):
        return []
    return [int(f.read_text()) for f in files]


@pytest.mark.backends("sqlite")
def test_setsid_and_double_fork_end_with_the_attempt(queue: Queue, tmp_path: Path) -> None:
    done, timed_out = tmp_path / "done", tmp_path / "timed_out"
    done.mkdir()
    timed_out.mkdir()
    queue.fast()
    queue.enqueue({"id": "exits", "command": ESCAPE.format(d=done) + "sleep 0.5",
                   "max_retries": 0})
    queue.enqueue({"id": "hangs", "command": ESCAPE.format(d=timed_out) + "sleep 100",
                   "timeout": 1, "max_retries": 0})
    queue.start_workers(1)
    job = queue.wait_state("hangs", "dead")
    assert "timed out" in job["last_error"]
    assert queue.show("exits")["state"] == "completed"
    for directory in (done, timed_out):
        pids = wait_until(lambda: escaped_pids(directory), 5,  # noqa: B023 - called at once
                          message=str(directory))
        wait_until(lambda: not any(pid_running(pid) for pid in pids), 5,  # noqa: B023
                   message=f"escaped processes {pids} to end")
    queue.stop_workers()
