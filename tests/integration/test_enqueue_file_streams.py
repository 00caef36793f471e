"""``enqueue --file`` streams the file into one all-or-nothing insert: its
memory does not grow with the file (issue 21, item 15)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from .conftest import QUEUECTL, Queue

JOBS = 80_000


@pytest.mark.backends("sqlite")
def test_enqueue_file_memory_does_not_grow_with_the_file(queue: Queue) -> None:
    path = queue.workdir / "jobs.jsonl"
    with path.open("w") as lines:
        for i in range(JOBS):
            lines.write(json.dumps({"id": f"job-{i:06d}", "command": "true"}) + "\n")
    out, err = queue.workdir / "out", queue.workdir / "err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen([str(QUEUECTL), "enqueue", "--file", str(path)],
                                env=queue.env, cwd=queue.workdir, stdout=stdout,
                                stderr=stderr, stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)  # wait4: the process's own peak RSS
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert (proc.returncode, out.read_text(), err.read_text()) == (
        0, f"Enqueued {JOBS} jobs.\n", "")
    assert queue.status()["pending"] == JOBS
    # Held whole, 80,000 jobs took about 170 MB; streamed, the interpreter's
    # own 20-odd MB and a batch (the bound: about 100 MB whatever the size).
    assert usage.ru_maxrss < 100 * 1024, f"peak RSS {usage.ru_maxrss} KiB"
