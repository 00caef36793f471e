"""`worker start` while this queue's workers run on this machine says so
and starts nothing; `--add` starts more beside them."""

from __future__ import annotations

import pytest

from .conftest import Queue, one_error


@pytest.mark.backends("sqlite")
def test_a_second_start_is_refused_unless_added(queue: Queue) -> None:
    first = queue.start_workers(2)
    again = queue.run("worker", "start", check=False)
    one_error(again, 1)
    assert again.stderr == (
        "Error: workers are already running for this queue: 2 worker(s) under supervisor "
        f"{first.supervisor}; to start more beside them: queuectl worker start --add (or stop "
        "them first: queuectl worker stop)\n")
    assert again.stdout == ""
    queue.start_workers(1)  # the helper adds --add beside a running group
    queue.wait_active_workers(3)
    assert "All workers stopped." in queue.stop_workers()
    assert queue.run("worker", "start").stdout.startswith("Starting 1 worker process...")
    queue.stop_workers()
