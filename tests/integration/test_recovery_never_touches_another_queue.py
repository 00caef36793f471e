"""Two queues on one machine run a job of the same id: when one queue's
worker dies and another worker of that queue takes its job back (killing
the dead worker's command first), the other queue's command of the same job
id and attempt runs on. Commands are told apart by QUEUECTL_WORKER_ID."""

from __future__ import annotations

import os
import signal
from functools import partial
from pathlib import Path

import pytest

from .conftest import Queue, pid_running, wait_until


def sleeper(marks: Path) -> str:
    return f"echo $$ > {marks}/pid-$QUEUECTL_ATTEMPT.tmp; mv {marks}/pid-$QUEUECTL_ATTEMPT.tmp " \
           f"{marks}/pid-$QUEUECTL_ATTEMPT; sleep 120"


@pytest.mark.backends("sqlite")
def test_taking_back_a_dead_workers_job_spares_another_queues_twin(queue: Queue,
                                                                  tmp_path: Path) -> None:
    other = Queue(tmp_path / "other-home", tmp_path, "sqlite")
    try:
        marks = {q: tmp_path / name for q, name in ((queue, "marks-a"), (other, "marks-b"))}
        groups = {}
        for q, m in marks.items():
            m.mkdir()
            q.fast(lease_seconds=3)
            groups[q] = q.start_workers(1)
            q.enqueue({"id": "twin", "command": sleeper(m), "max_retries": 1})

        def started(m: Path) -> int:
            return int((m / "pid-1").read_text()) if (m / "pid-1").exists() else 0

        pids = {q: wait_until(partial(started, m), 20, message="twin to start")
                for q, m in marks.items()}
        victim = groups[queue]
        os.kill(victim.supervisor, signal.SIGKILL)
        os.kill(victim.workers[0], signal.SIGKILL)
        wait_until(lambda: not pid_running(victim.workers[0]), 5, message="the worker to die")
        queue.start_workers(1)  # takes the job back once its lease expires
        wait_until(lambda: (marks[queue] / "pid-2").exists(), 30, message="the retry to start")
        assert not pid_running(pids[queue]), "the dead worker's own command is killed"
        assert pid_running(pids[other]), "the other queue's twin was killed"
        assert other.show("twin")["state"] == "processing"
    finally:
        strays = other.cleanup()
        assert not strays, strays
