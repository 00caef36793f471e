"""The template's plugins through the real ``queuectl``, configured in YAML
with options, and the queue's home given by ``--home`` (not the
environment): a failing job retries after the policy's delays, and its
death is appended to the notifier's file under that home."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from queuectl_core.settings import Settings
from queuectl_template.policy import StepsPolicy

_BESIDE = Path(sys.executable).with_name("queuectl")
QUEUECTL = str(_BESIDE) if _BESIDE.exists() else shutil.which("queuectl") or "queuectl"


def test_steps_gives_one_delay_per_attempt_then_the_last() -> None:
    policy = StepsPolicy([1.5, 4.0])
    settings = Settings()
    assert [policy.delay_seconds(n, settings) for n in (1, 2, 3, 9)] == [1.5, 4.0, 4.0, 4.0]


def test_policy_and_notifier_configured_in_yaml_under_a_home_given_by_option(
        tmp_path: Path) -> None:
    home = tmp_path / "queue home"
    home.mkdir()
    (home / "queuectl.yaml").write_text(
        "retry:\n  policy: steps\n  options: {seconds: [0.5, 1.5]}\n"
        "notifiers:\n  dlqfile: {path: dead.jsonl}\n")
    env = {k: v for k, v in os.environ.items() if k != "QUEUECTL_HOME"}

    def queuectl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([QUEUECTL, "--home", str(home), *args], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=60)

    job = {"id": "flaky", "command": "exit 4", "max_retries": 2}
    assert queuectl("enqueue", json.dumps(job)).returncode == 0
    try:
        assert queuectl("worker", "start").returncode == 0
        deadline = time.monotonic() + 30
        while not (home / "dead.jsonl").exists():
            assert time.monotonic() < deadline, queuectl("show", "flaky").stdout
            time.sleep(0.05)
    finally:
        queuectl("worker", "stop")
    [line] = (home / "dead.jsonl").read_text().splitlines()
    dead = json.loads(line)
    assert (dead["event"], dead["job"]["id"], dead["job"]["state"]) == ("dead", "flaky", "dead")
    shown = json.loads(queuectl("show", "flaky", "--json").stdout)
    starts = [datetime.fromisoformat(a["started_at"]) for a in shown["attempts_history"]]
    ends = [datetime.fromisoformat(a["finished_at"]) for a in shown["attempts_history"]]
    gaps = [(starts[i + 1] - ends[i]).total_seconds() for i in range(2)]
    assert gaps[0] >= 0.5 and gaps[1] >= 1.5, gaps  # the policy's delays, not 2 ** n
    assert gaps[1] < 4, gaps  # and not the default's 4 s after the second
