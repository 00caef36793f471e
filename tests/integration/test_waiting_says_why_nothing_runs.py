"""`wait` and `logs --follow` on a job that nothing will run keep waiting,
but say why on stderr after a few seconds, and again when the reason
changes; once a worker runs the job, they end as usual."""

from __future__ import annotations

import subprocess

import pytest

from .conftest import QUEUECTL, Queue, read_line


@pytest.mark.backends("sqlite")
def test_wait_says_the_queue_is_paused_then_that_no_worker_runs(queue: Queue) -> None:
    queue.enqueue({"id": "w1", "command": "echo done"})
    queue.run("pause", "default")
    waiter = subprocess.Popen([str(QUEUECTL), "wait", "w1"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=queue.env,
                              cwd=queue.workdir)
    try:
        assert read_line(waiter.stderr, 20) == (
            "Note: still waiting: queue 'default' is paused (resume it: queuectl resume "
            "default)\n")
        queue.run("resume", "default")  # the reason changes: said again
        assert read_line(waiter.stderr, 20) == (
            "Note: still waiting: no worker is running for queue 'default' (start one: "
            "queuectl worker start)\n")
        queue.start_workers(1)
        assert waiter.wait(timeout=30) == 0
        assert waiter.stdout is not None and waiter.stdout.read() == b"Job w1 completed.\n"
    finally:
        waiter.kill()
        waiter.wait()
    queue.stop_workers()


@pytest.mark.backends("sqlite")
def test_logs_follow_says_no_worker_runs_the_job(queue: Queue) -> None:
    queue.enqueue({"id": "f1", "command": "echo followed"})
    follower = subprocess.Popen([str(QUEUECTL), "logs", "--follow", "f1"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, env=queue.env, cwd=queue.workdir)
    try:
        assert read_line(follower.stderr, 20) == (
            "Note: job f1 has not started yet (pending); waiting for it to run\n")
        assert read_line(follower.stderr, 20) == (
            "Note: still waiting: no worker is running for queue 'default' (start one: "
            "queuectl worker start)\n")
        queue.start_workers(1)
        assert follower.wait(timeout=30) == 0
        assert follower.stdout is not None and follower.stdout.read() == b"followed\n"
    finally:
        follower.kill()
        follower.wait()
    queue.stop_workers()
