"""The nice executor through the real ``queuectl``: chosen in YAML, its
commands run at the niceness and I/O class configured, and what the base
does for it (environment, logs, timeouts that kill the process group)
works as for the shell executor."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

_BESIDE = Path(sys.executable).with_name("queuectl")
QUEUECTL = str(_BESIDE) if _BESIDE.exists() else shutil.which("queuectl") or "queuectl"


@pytest.fixture
def queuectl(tmp_path: Path) -> Iterator[Any]:
    (tmp_path / "queuectl.yaml").write_text(
        "executor: nice\nexecutors:\n  nice:\n    niceness: 7\n    io_class: idle\n")
    env = {**os.environ, "QUEUECTL_HOME": str(tmp_path)}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([QUEUECTL, *args], env=env, capture_output=True, text=True,
                              timeout=60)
    yield run
    run("worker", "stop")


def show(queuectl: Any, job_id: str) -> dict[str, Any]:
    proc = queuectl("show", job_id, "--json")
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def test_commands_run_niced_and_a_timeout_kills_the_group(queuectl: Any) -> None:
    probe = "echo nice=$(cut -d' ' -f19 /proc/$$/stat) io=$(ionice -p $$) job=$QUEUECTL_JOB_ID"
    assert queuectl("enqueue", json.dumps({"id": "probe", "command": probe})).returncode == 0
    slow = {"id": "slow", "command": "sleep 60 & sleep 60", "timeout": 1, "max_retries": 0}
    assert queuectl("enqueue", json.dumps(slow)).returncode == 0
    started = queuectl("worker", "start", "--count", "2")
    assert started.returncode == 0, started.stderr
    deadline = time.monotonic() + 30
    while not (show(queuectl, "probe")["state"] == "completed"
               and show(queuectl, "slow")["state"] == "dead"):
        assert time.monotonic() < deadline, (show(queuectl, "probe"), show(queuectl, "slow"))
        time.sleep(0.05)
    assert queuectl("logs", "probe").stdout == "nice=7 io=idle job=probe\n"
    assert "timed out" in show(queuectl, "slow")["last_error"]
    assert "executor nice" in queuectl("plugins").stdout
