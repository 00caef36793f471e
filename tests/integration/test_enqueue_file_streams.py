"""``enqueue --file`` streams the file into one all-or-nothing insert: its
memory does not grow with the file (issue 21, item 15)."""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest

from .conftest import QUEUECTL, Queue

JOBS = 80_000
#: Runs argv[2:] and writes its peak RSS (KiB) to argv[1]; exits as it did.
_MEASURE = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
open(sys.argv[1], "w").write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


@pytest.mark.backends("sqlite")
def test_enqueue_file_memory_does_not_grow_with_the_file(queue: Queue) -> None:
    path = queue.workdir / "jobs.jsonl"
    with path.open("w") as lines:
        for i in range(JOBS):
            lines.write(json.dumps({"id": f"job-{i:06d}", "command": "true"}) + "\n")
    out, err, peak = (queue.workdir / name for name in ("out", "err", "peak"))
    with out.open("wb") as stdout, err.open("wb") as stderr:
        # The command's own peak RSS (wait4), forked from a small Python: a
        # child forked from this test's process would count its pages too
        # (Linux keeps the peak across exec).
        code = subprocess.run(
            [sys.executable, "-c", _MEASURE, str(peak), str(QUEUECTL), "enqueue", "--file",
             str(path)], env=queue.env, cwd=queue.workdir, stdout=stdout, stderr=stderr,
            stdin=subprocess.DEVNULL, check=False).returncode
    assert (code, out.read_text(), err.read_text()) == (0, f"Enqueued {JOBS} jobs.\n", "")
    usage = SimpleNamespace(ru_maxrss=int(peak.read_text()))
    assert queue.status()["pending"] == JOBS
    # Held whole, 80,000 jobs took about 170 MB; streamed, the interpreter's
    # own 20-odd MB and a batch (the bound: about 100 MB whatever the size).
    assert usage.ru_maxrss < 100 * 1024, f"peak RSS {usage.ru_maxrss} KiB"
