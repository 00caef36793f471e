"""Every command queuectl accepts can run (issue 20 item 8): one argument is
capped at 128 KiB by Linux, a command at 1,000,000 characters by queuectl;
a longer command runs from a file in the attempt's private directory."""

from __future__ import annotations

import json

import pytest

from .conftest import Queue


@pytest.mark.backends("sqlite")
def test_a_500_kb_command_runs(queue: Queue) -> None:
    command = f'v="{"x" * 500_000}"\necho "length ${{#v}}"'
    out = queue.run("enqueue", "--file", "-", stdin=json.dumps(
        {"id": "long", "command": command, "max_retries": 0}) + "\n").stdout
    assert out == "Job enqueued with ID: long\n", out
    queue.fast()
    queue.start_workers(1)
    job = queue.wait_state("long", "completed")
    queue.stop_workers()
    assert job["attempts"] == 1
    assert queue.run("logs", "long").stdout == "length 500000\n"
    assert sorted(p.name for p in (queue.home / "logs" / "jobs" / "long").iterdir()) == [
        "attempt-1.out"]
