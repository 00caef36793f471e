"""Root (or anyone) never runs, purges or stops the queue of another user
unless told to trust that user, and never follows a symbolic link the
queue's owner planted in the home (issue 20, item 1).

The attacker is a real second user, ``mallory``: her queue is made by root
with ``queuectl import`` and handed over with ``chown`` (her account cannot
run this virtualenv, which lives under /root), and she plants her symbolic
links herself with ``runuser -u mallory -- ln -s``. Then root runs the real
``queuectl`` on it. SQLite only: the store does not matter here.
"""

from __future__ import annotations

import fcntl
import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from queuectl_core.joblogs import open_output_file

from .conftest import QUEUECTL

USER = "mallory"


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root: creates the user mallory and runs queuectl as root on her queue"
    for tool in ("useradd", "runuser"):
        if shutil.which(tool) is None:
            return f"{tool} is not available"
    return None


@pytest.fixture(scope="session")
def mallory() -> pwd.struct_passwd:
    reason = _skip_reason()
    if reason is not None:
        pytest.skip(reason)
    # Test processes run in parallel: one creates the user, the others wait.
    with open("/tmp/queuectl-test-useradd.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return pwd.getpwnam(USER)
        except KeyError:
            subprocess.run(["useradd", "-m", USER], check=True, capture_output=True)
            return pwd.getpwnam(USER)


def as_mallory(*argv: str) -> None:
    subprocess.run(["runuser", "-u", USER, "--", *argv], check=True, capture_output=True)


@pytest.fixture
def home(mallory: pwd.struct_passwd) -> Iterator[Path]:
    """Mallory's queue (a temporary directory she can reach: /tmp)."""
    path = Path(tempfile.mkdtemp(prefix="queuectl-mallory-", dir="/tmp"))
    try:
        yield path
    finally:
        if any((path / "run").glob("supervisor-*.json")):  # started despite the refusal
            queuectl(path, "worker", "stop", "--timeout", "5", trust=USER)
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A root-only directory holding what a job directory 'victimdir' would."""
    directory = tmp_path / "root-only"
    (directory / "victimdir").mkdir(parents=True)
    (directory / "victimdir" / "attempt-1.out").write_text("root's own\n")
    os.chmod(directory, 0o700)
    return directory


def queuectl(home: Path, *args: str, trust: str | None = None,
             timeout: float = 20) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUEUECTL_")}
    env["QUEUECTL_HOME"] = str(home)
    if trust is not None:
        env["QUEUECTL_TRUST_OWNER"] = trust
    return subprocess.run([str(QUEUECTL), *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def job_line(job_id: str, state: str, command: str) -> str:
    stamp = "2026-01-01T00:00:00.000Z"
    return json.dumps({
        "id": job_id, "command": command, "state": state, "attempts": int(state == "dead"),
        "max_retries": 0, "priority": 0, "run_at": stamp, "created_at": stamp,
        "updated_at": stamp, "started_at": None,
        "finished_at": "2026-01-01T00:00:01.000Z" if state == "dead" else None,
        "worker_id": None, "lease_expires_at": None,
        "last_error": "failed" if state == "dead" else None,
        "exit_code": 1 if state == "dead" else None, "queue": "default", "timeout": None,
        "cwd": "/", "env": None, "retry": None, "cancel_requested_at": None,
        "attempts_history": []}) + "\n"


def mallorys_queue(home: Path, victim: Path, state: str, command: str = "exit 1") -> None:
    """A job 'victimdir' in ``state``, the home given to mallory, and her
    ``logs/jobs`` pointing at root's ``victim`` directory."""
    jobs = home / "jobs.jsonl"
    jobs.write_text(job_line("victimdir", state, command))
    assert queuectl(home, "import", str(jobs)).returncode == 0
    jobs.unlink()
    subprocess.run(["chown", "-R", f"{USER}:", str(home)], check=True)
    as_mallory("mkdir", "-m", "700", str(home / "logs"))
    as_mallory("ln", "-s", str(victim), str(home / "logs" / "jobs"))


def refusal(home: Path, doing: str, risk: str, uid: int) -> str:
    return (f"Error: refusing to {doing}: {home} belongs to {USER} (uid {uid}), not to you "
            f"(root), and its owner could {risk}; use a QUEUECTL_HOME of your own, or trust "
            f"that user with QUEUECTL_TRUST_OWNER={USER}\n")


@pytest.mark.parametrize(("command", "doing", "risk"), [
    (["worker", "run"], "run workers", "run commands as you"),
    (["worker", "start"], "run workers", "run commands as you"),
    (["worker", "stop"], "stop workers", "make you signal any process"),
    (["dlq", "purge", "--all"], "purge", "make you delete or write files outside it"),
    (["purge", "--state", "dead"], "purge", "make you delete or write files outside it"),
])
def test_root_refuses_another_users_queue(home: Path, victim: Path,
                                          mallory: pwd.struct_passwd, command: list[str],
                                          doing: str, risk: str) -> None:
    mallorys_queue(home, victim, "dead")
    result = queuectl(home, *command, timeout=10)
    assert (result.returncode, result.stderr) == (1, refusal(home, doing, risk, mallory.pw_uid))
    assert (victim / "victimdir" / "attempt-1.out").read_text() == "root's own\n"


@pytest.mark.parametrize("command", [["dlq", "purge", "--all"], ["purge", "--state", "dead"]])
def test_trusted_purge_never_deletes_through_a_symlinked_logs_jobs(
        home: Path, victim: Path, command: list[str]) -> None:
    mallorys_queue(home, victim, "dead")
    result = queuectl(home, *command, trust=USER)
    assert result.returncode == 0, result.stderr
    assert result.stderr == (f"Warning: job output not deleted: {home}/logs/jobs is a symbolic "
                             "link (queuectl never follows one in its home)\n")
    assert (victim / "victimdir" / "attempt-1.out").read_text() == "root's own\n"
    assert queuectl(home, "dlq", "list").stdout == "The dead letter queue is empty.\n"


def test_trusted_worker_never_writes_job_output_through_a_symlinked_logs_jobs(
        home: Path, victim: Path) -> None:
    mallorys_queue(home, victim, "pending", command="echo appended")
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUEUECTL_")}
    env |= {"QUEUECTL_HOME": str(home), "QUEUECTL_TRUST_OWNER": str(pwd.getpwnam(USER).pw_uid)}
    proc = subprocess.Popen([str(QUEUECTL), "worker", "run"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            shown = json.loads(queuectl(home, "show", "victimdir", "--json").stdout)
            if shown["state"] == "completed":
                break
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=15)
    assert shown["state"] == "completed", stderr
    assert "jobs is a symbolic link" in stderr
    assert (victim / "victimdir" / "attempt-1.out").read_text() == "root's own\n"
    assert sorted(p.name for p in victim.rglob("*")) == ["attempt-1.out", "victimdir"]


def test_job_output_is_never_appended_to_a_symlinked_attempt_file(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("kept\n")
    job_dir = tmp_path / "home" / "logs" / "jobs" / "job1"
    job_dir.mkdir(parents=True)
    (job_dir / "attempt-1.out").symlink_to(target)
    with pytest.raises(OSError, match=r"attempt-1\.out is a symbolic link"):
        open_output_file(job_dir / "attempt-1.out")
    assert target.read_text() == "kept\n"
