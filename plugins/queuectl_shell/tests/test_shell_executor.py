"""The shell executor against real processes (no mocks)."""

from __future__ import annotations

import gc
import os
import shlex
import signal
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

import queuectl_shell
from queuectl_core.executor import Execution
from queuectl_core.joblogs import attempt_path, dropped_bytes, read_chunks, rotated_path
from queuectl_core.models import ExecResult, Job, JobState
from queuectl_core.plugins import build_plugins
from queuectl_core.registry import PluginContext
from queuectl_shell.executor import ShellExecutor
from queuectl_shell.options import ShellOptions

DEADLINE = 15.0  # generous: some inits reap orphaned zombies only every few seconds


def make_job(command: str, job_id: str = "job-1", **fields: Any) -> Job:
    return Job(id=job_id, command=command, state=JobState.PROCESSING, max_retries=3,
               run_at=0, created_at=0, updated_at=0, **fields)


def run(execution: Execution, limit: float = DEADLINE) -> ExecResult:
    """Wait for the result in slices, as the worker does."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        result = execution.wait(0.5)
        if result is not None:
            return result
    execution.kill(0)
    pytest.fail("command did not finish in time")


def group_gone(pgid: int, limit: float = DEADLINE) -> bool:
    """Poll until no process is left in the group (or the deadline passes)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.02)
    return False


@pytest.fixture
def executor() -> ShellExecutor:
    return ShellExecutor(ShellOptions())


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    path = tmp_path / "logs"
    path.mkdir()
    return path


@pytest.fixture
def started() -> Iterator[list[Execution]]:
    """Executions to kill at teardown should a test fail midway."""
    executions: list[Execution] = []
    yield executions
    for execution in executions:
        execution.kill(0)


def test_echo_succeeds(executor: ShellExecutor, logs: Path) -> None:
    execution = executor.start(make_job("echo hello"), attempt=1, log_dir=logs)
    assert execution.pgid is not None
    result = run(execution)
    assert result == ExecResult(exit_code=0, signal=None, error=None)
    assert result.ok
    assert (logs / "attempt-1.out").read_text() == "hello\n"
    assert not (logs / "attempt-1.err").exists(), "a silent stream leaves no file"
    assert execution.wait(0) == result  # the result is kept


def test_nonzero_exit_fails_with_error(executor: ShellExecutor, logs: Path) -> None:
    result = run(executor.start(make_job("exit 3"), attempt=1, log_dir=logs))
    assert result.exit_code == 3
    assert result.signal is None
    assert result.error == "command exited with code 3"
    assert not result.ok


def test_error_is_stderr_tail(executor: ShellExecutor, logs: Path) -> None:
    result = run(executor.start(make_job("echo oops >&2; exit 1"), attempt=1, log_dir=logs))
    assert result.exit_code == 1
    assert result.error == "oops"


def test_unknown_command_is_not_found(executor: ShellExecutor, logs: Path) -> None:
    result = run(executor.start(make_job("nonexistent_command_xyz"), attempt=1, log_dir=logs))
    assert result.exit_code == 127
    assert result.error is not None
    assert "not found" in result.error


def test_exit_127_without_message_says_not_found(executor: ShellExecutor, logs: Path) -> None:
    result = run(executor.start(make_job("exit 127"), attempt=1, log_dir=logs))
    assert result.exit_code == 127
    assert result.error == "command not found (exit 127)"


@pytest.mark.parametrize("cap", [4096, 100, 0])
def test_stderr_tail_is_capped(logs: Path, cap: int) -> None:
    executor = ShellExecutor(ShellOptions(stderr_tail_bytes=cap))
    command = "head -c 1048576 /dev/zero | tr '\\0' x >&2; echo END >&2; exit 1"
    result = run(executor.start(make_job(command), attempt=1, log_dir=logs))
    assert result.exit_code == 1
    assert (logs / "attempt-1.err").stat().st_size == 1048576 + 4
    assert result.error is not None
    if cap:
        assert len(result.error) <= cap
        assert result.error.endswith("xxxEND")
    else:
        assert result.error == "command exited with code 1"


def test_huge_stdout_goes_to_file_not_memory(executor: ShellExecutor, logs: Path) -> None:
    size = 20 * 1024 * 1024
    tracemalloc.start()
    try:
        result = run(executor.start(make_job(f"head -c {size} /dev/zero"), attempt=1,
                                    log_dir=logs))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.ok
    assert (logs / "attempt-1.out").stat().st_size == size
    assert peak < 1024 * 1024


def test_job_environment(executor: ShellExecutor, logs: Path) -> None:
    command = 'printf "%s %s" "$QUEUECTL_JOB_ID" "$QUEUECTL_ATTEMPT"'
    result = run(executor.start(make_job(command, job_id="job-env"), attempt=2, log_dir=logs))
    assert result.ok
    assert (logs / "attempt-2.out").read_text() == "job-env 2"


def test_worker_environment_is_inherited(executor: ShellExecutor, logs: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUEUECTL_TEST_INHERITED", "yes")
    result = run(executor.start(make_job('printf %s "$QUEUECTL_TEST_INHERITED"'), attempt=1,
                                log_dir=logs))
    assert result.ok
    assert (logs / "attempt-1.out").read_text() == "yes"


def test_secret_variables_never_reach_the_command(logs: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Variables the plugins declare secret (``hidden_env``) are not in the
    command's environment; a job's own ``env`` may still set one."""
    monkeypatch.setenv("QUEUECTL_TEST_SECRET", "pw-of-the-worker")
    monkeypatch.setenv("QUEUECTL_TEST_OTHER", "kept")
    executor = ShellExecutor(ShellOptions())
    executor.hidden_env = frozenset({"QUEUECTL_TEST_SECRET", "QUEUECTL_TEST_OTHER2"})
    result = run(executor.start(make_job('printf "%s|%s" "${QUEUECTL_TEST_SECRET-unset}" '
                                         '"$QUEUECTL_TEST_OTHER"'), attempt=1, log_dir=logs))
    assert result.ok
    assert (logs / "attempt-1.out").read_text() == "unset|kept"
    job = make_job('printf %s "$QUEUECTL_TEST_SECRET"', env={"QUEUECTL_TEST_SECRET": "own"})
    assert run(executor.start(job, attempt=2, log_dir=logs)).ok
    assert (logs / "attempt-2.out").read_text() == "own"


def test_a_command_longer_than_one_argument_runs_from_a_private_file(
        executor: ShellExecutor, logs: Path) -> None:
    """Linux refuses an argument over 128 KiB: a 500 KB command runs from
    ``attempt-N.sh``, private to the attempt, removed when it ends."""
    command = f'v="{"x" * 500_000}"\nprintf "%s|%s" "${{#v}}" "$0"'
    execution = executor.start(make_job(command), attempt=3, log_dir=logs)
    script = logs / "attempt-3.sh"
    assert script.stat().st_mode & 0o777 == 0o600
    result = run(execution)
    assert result.ok, result.error
    assert (logs / "attempt-3.out").read_text() == f"500000|{script}"
    assert not script.exists()


def test_command_runs_exactly_as_written(executor: ShellExecutor, logs: Path) -> None:
    command = (
        'GREETING="héllo wörld ✓ 日本"\n'
        "printf '%s|%s\\n' \"$GREETING\" 'single $NOT_EXPANDED \"dq\"'\n"
        'echo "tab\there" `echo back` $((1 + 2))\n'
    )
    result = run(executor.start(make_job(command), attempt=1, log_dir=logs))
    assert result.ok, result.error
    assert (logs / "attempt-1.out").read_text(encoding="utf-8") == (
        'héllo wörld ✓ 日本|single $NOT_EXPANDED "dq"\n'
        "tab\there back 3\n"
    )


def test_stdin_is_dev_null(executor: ShellExecutor, logs: Path) -> None:
    result = run(executor.start(make_job("cat; echo done"), attempt=1, log_dir=logs))
    assert result.ok
    assert (logs / "attempt-1.out").read_text() == "done\n"


def test_own_session_and_process_group(executor: ShellExecutor, logs: Path) -> None:
    result = run(executor.start(make_job("ps -o pid= -o pgid= -o sid= -p $$"), attempt=1,
                                log_dir=logs))
    assert result.ok
    pid, pgid, sid = (logs / "attempt-1.out").read_text().split()
    assert pid == pgid == sid
    assert int(pgid) != os.getpgrp()


def test_wait_returns_none_quickly_while_running(executor: ShellExecutor, logs: Path,
                                                 started: list[Execution]) -> None:
    execution = executor.start(make_job("sleep 60"), attempt=1, log_dir=logs)
    started.append(execution)
    begin = time.monotonic()
    assert execution.wait(0.05) is None
    assert time.monotonic() - begin < 5.0, "wait(0.05) must not block on the command"
    assert execution.wait(0) is None


def test_wait_returns_promptly_on_exit(executor: ShellExecutor, logs: Path) -> None:
    execution = executor.start(make_job("sleep 0.2"), attempt=1, log_dir=logs)
    begin = time.monotonic()
    result = execution.wait(30)
    assert result is not None and result.ok
    assert time.monotonic() - begin < 5.0


def test_kill_terminates_command(executor: ShellExecutor, logs: Path,
                                 started: list[Execution]) -> None:
    execution = executor.start(make_job("sleep 60"), attempt=1, log_dir=logs)
    started.append(execution)
    pgid = execution.pgid
    assert pgid is not None
    result = execution.kill(2.0)
    assert result.signal == signal.SIGTERM
    assert result.exit_code is None
    assert result.error == "killed by signal SIGTERM (15)"
    assert not result.ok
    assert group_gone(pgid)
    assert execution.wait(0) == result
    assert execution.kill() == result


def test_zombies_do_not_keep_a_group_running() -> None:
    """`sh -c 'sleep 60'` forks sleep; once the shell is reaped, the dead
    sleep is a zombie whose new parent (init) may reap it late (seen: about
    2 s on a firecracker VM) or never (some containers). kill() must not
    wait out its grace for it, or timeouts, cancels and forced stops would
    all take the full grace. Here the zombie is our own unreaped child."""
    from queuectl_shell.process import _group_running

    proc = subprocess.Popen(["true"], start_new_session=True)
    try:
        deadline = time.monotonic() + DEADLINE
        while Path(f"/proc/{proc.pid}/stat").read_bytes().rpartition(b")")[2].split()[0] \
                != b"Z":
            assert time.monotonic() < deadline, "the child did not exit"
            time.sleep(0.01)
        os.killpg(proc.pid, 0)  # the group still "exists" for kill()
        assert not _group_running(proc.pid)
    finally:
        proc.wait()
    sleeper = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        assert _group_running(sleeper.pid)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert not _group_running(sleeper.pid)


def test_kill_terminates_background_grandchild(executor: ShellExecutor, logs: Path,
                                               started: list[Execution]) -> None:
    execution = executor.start(make_job("sleep 60 & sleep 60; wait"), attempt=1, log_dir=logs)
    started.append(execution)
    pgid = execution.pgid
    assert pgid is not None
    result = execution.kill(2.0)
    assert result.signal is not None
    assert group_gone(pgid)


def test_kill_escalates_to_sigkill(executor: ShellExecutor, logs: Path,
                                   started: list[Execution]) -> None:
    # Ignored signals stay ignored across exec, so neither sh nor sleep
    # reacts to SIGTERM.
    execution = executor.start(make_job("trap '' TERM; echo ready; sleep 60; echo never"),
                               attempt=1, log_dir=logs)
    started.append(execution)
    pgid = execution.pgid
    assert pgid is not None
    wait_for_output(execution, logs / "attempt-1.out", b"ready\n")  # the trap is set
    begin = time.monotonic()
    result = execution.kill(0.3)
    assert time.monotonic() - begin < 5.0
    assert result.signal == signal.SIGKILL
    assert result.error == "killed by signal SIGKILL (9)"
    assert group_gone(pgid)


def test_kill_when_command_exits_itself_on_sigterm(executor: ShellExecutor, logs: Path,
                                                   started: list[Execution]) -> None:
    command = "trap 'exit 0' TERM; echo ready; while :; do sleep 0.05; done"
    execution = executor.start(make_job(command), attempt=1, log_dir=logs)
    started.append(execution)
    wait_for_output(execution, logs / "attempt-1.out", b"ready\n")
    result = execution.kill(5.0)
    # A command stopped by kill() is never reported as a success.
    assert not result.ok
    assert result.signal == signal.SIGTERM


def test_kill_uses_option_grace_by_default(logs: Path, started: list[Execution]) -> None:
    executor = ShellExecutor(ShellOptions(kill_grace_seconds=0.2))
    execution = executor.start(make_job("trap '' TERM; echo ready; sleep 60"), attempt=1,
                               log_dir=logs)
    started.append(execution)
    wait_for_output(execution, logs / "attempt-1.out", b"ready\n")
    begin = time.monotonic()
    assert execution.kill().signal == signal.SIGKILL
    assert time.monotonic() - begin < 5.0


def test_kill_after_exit_returns_the_exit(executor: ShellExecutor, logs: Path) -> None:
    execution = executor.start(make_job("exit 4"), attempt=1, log_dir=logs)
    pgid = execution.pgid
    assert pgid is not None
    os.waitid(os.P_PID, pgid, os.WEXITED | os.WNOWAIT)  # until it exits; leaves it unreaped
    result = execution.kill()
    assert result.exit_code == 4
    assert result.signal is None


def test_leftover_background_process_is_killed(executor: ShellExecutor, logs: Path) -> None:
    execution = executor.start(make_job("sleep 60 & echo started"), attempt=1, log_dir=logs)
    pgid = execution.pgid
    assert pgid is not None
    result = run(execution)
    assert result.ok
    assert (logs / "attempt-1.out").read_text() == "started\n"
    assert group_gone(pgid)


def test_killed_by_signal_from_inside(executor: ShellExecutor, logs: Path) -> None:
    result = run(executor.start(make_job("kill -KILL $$"), attempt=1, log_dir=logs))
    assert result.signal == signal.SIGKILL
    assert result.exit_code is None
    assert result.error == "killed by signal SIGKILL (9)"


def test_missing_shell_finishes_with_127(logs: Path) -> None:
    executor = ShellExecutor(ShellOptions(shell="/nonexistent/shell"))
    execution = executor.start(make_job("echo hi"), attempt=1, log_dir=logs)
    assert execution.pgid is None
    result = execution.wait(0)
    assert result is not None
    assert result.exit_code == 127
    assert result.error is not None
    assert "not found" in result.error and "/nonexistent/shell" in result.error
    assert execution.kill() == result
    assert "/nonexistent/shell" in (logs / "attempt-1.err").read_text()


def test_non_executable_shell_finishes_with_126(tmp_path: Path, logs: Path) -> None:
    shell = tmp_path / "not-executable"
    shell.write_text("#!/bin/sh\n")
    shell.chmod(0o644)
    executor = ShellExecutor(ShellOptions(shell=str(shell)))
    result = executor.start(make_job("echo hi"), attempt=1, log_dir=logs).wait(0)
    assert result is not None
    assert result.exit_code == 126
    assert result.error is not None and "ermission denied" in result.error


def test_unwritable_log_dir_runs_the_command_and_says_so(executor: ShellExecutor,
                                                         tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    marker = tmp_path / "ran"
    result = run(executor.start(make_job(f"echo hi; touch {marker}"), attempt=1,
                                log_dir=blocker / "logs", tail_bytes=100))
    assert marker.exists(), "the command runs; only its output cannot be stored"
    assert result.ok and result.stdout_tail == "hi\n"
    assert result.error is not None
    assert result.error.startswith("output not stored: cannot write ")
    assert str(blocker / "logs" / "attempt-1.out") in result.error


def test_silent_attempt_creates_no_files(executor: ShellExecutor, tmp_path: Path) -> None:
    log_dir = tmp_path / "logs" / "jobs" / "quiet"
    assert run(executor.start(make_job("true"), attempt=1, log_dir=log_dir)).ok
    assert not (tmp_path / "logs").exists(), "nothing written: no directory, no files"
    # The first output creates the directories (0700) and that stream's file
    # (0600) only.
    assert run(executor.start(make_job("echo late >&2"), attempt=2, log_dir=log_dir)).ok
    assert sorted(p.name for p in log_dir.iterdir()) == ["attempt-2.err"]
    assert (log_dir / "attempt-2.err").read_text() == "late\n"
    assert (log_dir / "attempt-2.err").stat().st_mode & 0o777 == 0o600
    for d in (tmp_path / "logs", tmp_path / "logs" / "jobs", log_dir):
        assert d.stat().st_mode & 0o777 == 0o700, d


def test_options_validation() -> None:
    assert ShellOptions() == ShellOptions(shell="/bin/sh", stderr_tail_bytes=4096,
                                          kill_grace_seconds=2.0)
    with pytest.raises(ValidationError):
        ShellOptions.model_validate({"shel": "/bin/bash"})
    with pytest.raises(ValidationError):
        ShellOptions(stderr_tail_bytes=-1)
    with pytest.raises(ValidationError):
        ShellOptions(stderr_tail_bytes=1024 * 1024 + 1)
    with pytest.raises(ValidationError):
        ShellOptions(kill_grace_seconds=float("nan"))
    ShellOptions(stderr_tail_bytes=1024 * 1024)


def test_plugin_registration(tmp_path: Path) -> None:
    specs = list(queuectl_shell.queuectl_executors())
    assert len(specs) == 1
    spec = specs[0]
    assert spec.name == "shell"
    assert spec.resolve_options_model() is ShellOptions
    assert spec.description
    executor = spec.resolve_factory()(ShellOptions(), PluginContext(home=tmp_path))
    result = run(executor.start(make_job("echo via-factory"), attempt=1, log_dir=tmp_path))
    assert result.ok
    assert (tmp_path / "attempt-1.out").read_text() == "via-factory\n"


def test_plugin_manager_selects_shell(tmp_path: Path) -> None:
    plugins = build_plugins(entry_points=False)
    plugins.register(queuectl_shell, name="shell")
    spec = plugins.executor("shell")
    executor = spec.resolve_factory()(None, PluginContext(home=tmp_path))
    assert run(executor.start(make_job("true"), attempt=1, log_dir=tmp_path)).ok


def test_import_is_light() -> None:
    code = (
        "import sys, queuectl_shell; "
        "list(queuectl_shell.queuectl_executors()); "
        "assert 'queuectl_shell.executor' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=dict(os.environ))


def test_repeated_attempt_number_appends_and_reads_only_its_own_stderr(tmp_path: Path) -> None:
    """An attempt number can repeat (forced stop, dlq retry): the earlier
    output is kept and the new error comes from the new run only."""
    executor = ShellExecutor()
    first = executor.start(make_job("echo one; echo first-error >&2; exit 1"), attempt=1,
                           log_dir=tmp_path)
    result = run(first)
    assert result.error == "first-error"
    second = executor.start(make_job("echo two; exit 2"), attempt=1, log_dir=tmp_path)
    result = run(second)
    assert result.error == "command exited with code 2"
    assert (tmp_path / "attempt-1.out").read_text() == "one\ntwo\n"


# ---------------------------------------------------------------- helpers (I/O)

MiB = 1024 * 1024


def wait_for_output(execution: Execution, path: Path, text: bytes,
                    limit: float = DEADLINE) -> None:
    """Drive the execution (wait() copies the output) until ``path``
    contains ``text``; the command must still be running then."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        assert execution.wait(0.05) is None, "the command ended too early"
        if path.exists() and text in path.read_bytes():
            return
    pytest.fail(f"{text!r} did not appear in {path.name} in time")


def kept(live: Path) -> bytes:
    return b"".join(read_chunks(live))


def on_disk(live: Path) -> int:
    return sum(p.stat().st_size for p in (live, rotated_path(live)) if p.exists())


def numbered_lines(count: int) -> bytes:
    return b"".join(b"%08d\n" % i for i in range(count))


def python_command(code: str) -> str:
    """A command line running ``code`` with this test's Python."""
    return f"{shlex.quote(sys.executable)} -c {shlex.quote(code)}"


def open_fds() -> dict[int, str]:
    """This process's descriptors and what each refers to."""
    fds = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            fds[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:  # the directory's own descriptor, closed by now
            continue
    return fds


# ---------------------------------------------------------------- cwd and env

def test_runs_in_worker_directory_by_default(executor: ShellExecutor, logs: Path) -> None:
    result = run(executor.start(make_job("pwd -P"), attempt=1, log_dir=logs))
    assert result.ok
    assert (logs / "attempt-1.out").read_text() == f"{Path.cwd().resolve()}\n"


def test_runs_in_job_cwd(executor: ShellExecutor, logs: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "work dir ✓"
    workdir.mkdir()
    (workdir / "input.txt").write_text("data\n")
    result = run(executor.start(make_job("pwd -P; cat input.txt", cwd=str(workdir)),
                                attempt=1, log_dir=logs))
    assert result.ok, result.error
    assert (logs / "attempt-1.out").read_text() == f"{workdir.resolve()}\ndata\n"


def test_missing_cwd_fails_naming_it(executor: ShellExecutor, logs: Path,
                                     tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    execution = executor.start(make_job("echo never", cwd=str(missing)), attempt=1,
                               log_dir=logs, tail_bytes=4096)
    assert execution.pgid is None
    result = execution.wait(0)
    assert result is not None
    assert not result.ok
    assert result.error == f"cannot run in {missing}: No such file or directory"
    assert (logs / "attempt-1.err").read_text() == f"queuectl-shell: {result.error}\n"
    assert result.stderr_tail == f"queuectl-shell: {result.error}\n"
    assert result.stdout_tail == ""
    assert not (logs / "attempt-1.out").exists()
    assert execution.kill() == result


def test_cwd_that_is_a_file_fails_naming_it(executor: ShellExecutor, logs: Path,
                                            tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    result = executor.start(make_job("echo never", cwd=str(not_a_dir)), attempt=1,
                            log_dir=logs).wait(0)
    assert result is not None and not result.ok
    assert result.error == f"cannot run in {not_a_dir}: Not a directory"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may enter any directory")
def test_unusable_cwd_fails_naming_it(executor: ShellExecutor, logs: Path,
                                      tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o000)
    try:
        result = executor.start(make_job("echo never", cwd=str(locked)), attempt=1,
                                log_dir=logs).wait(0)
    finally:
        locked.chmod(0o700)
    assert result is not None and not result.ok
    assert result.error == f"cannot run in {locked}: Permission denied"


def test_cwd_error_is_one_line(executor: ShellExecutor, logs: Path, tmp_path: Path) -> None:
    odd = tmp_path / "new\nline"
    result = executor.start(make_job("true", cwd=str(odd)), attempt=1, log_dir=logs).wait(0)
    assert result is not None and result.error is not None
    assert "\n" not in result.error
    assert result.error.startswith("cannot run in ")


def test_job_env_and_queuectl_variables(executor: ShellExecutor, logs: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUEUECTL_TEST_FROM_WORKER", "worker")
    monkeypatch.setenv("QUEUECTL_TEST_OVERRIDDEN", "worker")
    job = make_job(
        'printf "%s|%s|%s|%s|%s|%s|%s" "$QUEUECTL_TEST_FROM_WORKER" "$QUEUECTL_TEST_OVERRIDDEN" '
        '"$GREETING" "$QUEUECTL_JOB_ID" "$QUEUECTL_ATTEMPT" "$QUEUECTL_QUEUE" "$EMPTY"',
        job_id="job-env", queue="reports",
        env={"QUEUECTL_TEST_OVERRIDDEN": "job", "GREETING": "héllo wörld", "EMPTY": "",
             "QUEUECTL_QUEUE": "not-this-one"},
    )
    result = run(executor.start(job, attempt=7, log_dir=logs))
    assert result.ok, result.error
    assert (logs / "attempt-7.out").read_text() == (
        "worker|job|héllo wörld|job-env|7|reports|")


def test_default_queue_variable(executor: ShellExecutor, logs: Path) -> None:
    result = run(executor.start(make_job('printf %s "$QUEUECTL_QUEUE"'), attempt=1,
                                log_dir=logs))
    assert result.ok
    assert (logs / "attempt-1.out").read_text() == "default"


# ---------------------------------------------------------------- streaming and caps

def test_output_is_streamed_while_the_command_runs(executor: ShellExecutor, logs: Path,
                                                  tmp_path: Path,
                                                  started: list[Execution]) -> None:
    command = "echo first; echo to-err >&2; while [ ! -e go ]; do sleep 0.02; done; echo second"
    execution = executor.start(make_job(command, cwd=str(tmp_path)), attempt=1, log_dir=logs)
    started.append(execution)
    wait_for_output(execution, logs / "attempt-1.out", b"first\n")
    wait_for_output(execution, logs / "attempt-1.err", b"to-err\n")
    (tmp_path / "go").touch()
    assert run(execution).ok
    assert (logs / "attempt-1.out").read_text() == "first\nsecond\n"
    assert (logs / "attempt-1.err").read_text() == "to-err\n"


def test_cap_keeps_newest_output_in_order(executor: ShellExecutor, logs: Path) -> None:
    lines = 600_000  # 9 bytes each: 5.4 MB per stream
    code = ("import sys\n"
            f"for i in range({lines}):\n"
            "    line = '%08d\\n' % i\n"
            "    sys.stdout.write(line)\n"
            "    sys.stderr.write(line)\n")
    result = run(executor.start(make_job(python_command(code)), attempt=1, log_dir=logs,
                                output_max_bytes=MiB, tail_bytes=18), limit=120)
    assert result.ok, result.error
    expected = numbered_lines(lines)
    for stream in ("out", "err"):
        live = attempt_path(logs, 1, stream)
        assert on_disk(live) <= MiB
        data = kept(live)
        assert len(data) >= MiB // 2
        assert expected.endswith(data)
        assert dropped_bytes(live) == len(expected) - len(data)
    assert result.stdout_tail == result.stderr_tail == "00599998\n00599999\n"


@pytest.mark.parametrize("cap", [1, 2, 3, 10, 4096, 100_000, 300_000])
def test_cap_invariants_for_any_cap(executor: ShellExecutor, logs: Path, cap: int) -> None:
    lines = 50_000  # 450 kB, in pipe-sized and odd-sized pieces
    code = ("import os\n"
            f"data = b''.join(b'%08d\\n' % i for i in range({lines}))\n"
            "pos, size = 0, 1\n"
            "while pos < len(data):\n"
            "    os.write(1, data[pos:pos + size])\n"
            "    pos += size\n"
            "    size = size * 7 % 100_003 + 1\n")
    result = run(executor.start(make_job(python_command(code)), attempt=1, log_dir=logs,
                                output_max_bytes=cap), limit=120)
    assert result.ok, result.error
    expected = numbered_lines(lines)
    live = attempt_path(logs, 1, "out")
    data = kept(live)
    assert on_disk(live) <= cap
    assert len(data) >= min(cap // 2, len(expected))
    assert expected.endswith(data)
    assert dropped_bytes(live) == len(expected) - len(data)


def test_no_cap_keeps_everything(executor: ShellExecutor, logs: Path) -> None:
    result = run(executor.start(make_job("head -c 3000000 /dev/zero"), attempt=1,
                                log_dir=logs, output_max_bytes=0))
    assert result.ok
    live = attempt_path(logs, 1, "out")
    assert live.stat().st_size == 3_000_000
    assert not rotated_path(live).exists()
    assert dropped_bytes(live) == 0


def test_cap_when_appending_to_existing_output(executor: ShellExecutor, logs: Path) -> None:
    first = numbered_lines(30_000)  # 270 kB
    second = b"".join(b"%08d\n" % i for i in range(30_000, 50_000))  # 180 kB
    for code in ("import sys; sys.stdout.write(''.join('%08d\\n' % i for i in range(30000)))",
                 "import sys; sys.stdout.write(''.join('%08d\\n' % i "
                 "for i in range(30000, 50000)))"):
        result = run(executor.start(make_job(python_command(code)), attempt=1, log_dir=logs,
                                    output_max_bytes=200_000))
        assert result.ok, result.error
    live = attempt_path(logs, 1, "out")
    data = kept(live)
    assert on_disk(live) <= 200_000
    assert len(data) >= 100_000
    assert (first + second).endswith(data)
    assert dropped_bytes(live) == len(first) + len(second) - len(data)


# ---------------------------------------------------------------- tails

def test_tails_hold_the_end_of_each_stream(executor: ShellExecutor, logs: Path) -> None:
    command = "echo out-1; echo out-2; echo err-1 >&2; echo err-2 >&2; exit 3"
    result = run(executor.start(make_job(command), attempt=1, log_dir=logs, tail_bytes=6))
    assert result.stdout_tail == "out-2\n"
    assert result.stderr_tail == "err-2\n"
    assert result.error == "err-1\nerr-2"  # from stderr_tail_bytes, not tail_bytes
    result = run(executor.start(make_job(command), attempt=2, log_dir=logs, tail_bytes=4096))
    assert result.stdout_tail == "out-1\nout-2\n"
    assert result.stderr_tail == "err-1\nerr-2\n"


def test_tails_are_none_when_tail_bytes_is_zero(executor: ShellExecutor, logs: Path) -> None:
    result = run(executor.start(make_job("echo out; echo err >&2; exit 1"), attempt=1,
                                log_dir=logs, tail_bytes=0))
    assert result.stdout_tail is None and result.stderr_tail is None
    assert result.error == "err"


def test_tails_are_empty_strings_without_output(executor: ShellExecutor, logs: Path) -> None:
    result = run(executor.start(make_job("true"), attempt=1, log_dir=logs, tail_bytes=10))
    assert result == ExecResult(exit_code=0, stdout_tail="", stderr_tail="")


@pytest.mark.parametrize(("tail_bytes", "expected"),
                         [(1, ""), (2, "é"), (3, "é"), (5, "éé"), (6, "ééé"), (100, "ééé"),
                          (7, "ééé"), (8, "ééé"), (9, "✓ééé"), (10, "✓ééé"),
                          (11, "✓ééé"), (12, "日✓ééé")])
def test_tails_cut_at_character_boundaries(executor: ShellExecutor, logs: Path,
                                           tail_bytes: int, expected: str) -> None:
    text = "日✓ééé"  # 3 + 3 + 2 + 2 + 2 bytes
    command = f"printf '%s' '{text}'; printf '%s' '{text}' >&2"
    result = run(executor.start(make_job(command), attempt=1, log_dir=logs,
                                tail_bytes=tail_bytes))
    assert result.ok
    if tail_bytes >= len(text.encode()):
        expected = text
    assert result.stdout_tail == expected
    assert result.stderr_tail == expected


def test_tail_of_invalid_utf8_is_replaced(executor: ShellExecutor, logs: Path) -> None:
    result = run(executor.start(make_job("printf 'ab\\377\\376cd'"), attempt=1, log_dir=logs,
                                tail_bytes=100))
    assert result.stdout_tail == "ab\ufffd\ufffdcd"


def test_tails_of_huge_output_are_bounded(executor: ShellExecutor, logs: Path) -> None:
    command = "head -c 5000000 /dev/zero | tr '\\0' x; echo END"
    tracemalloc.start()
    try:
        result = run(executor.start(make_job(command), attempt=1, log_dir=logs,
                                    tail_bytes=1000, output_max_bytes=MiB))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.ok
    assert result.stdout_tail is not None
    assert len(result.stdout_tail) == 1000 and result.stdout_tail.endswith("xxxEND\n")
    assert peak < MiB


# ---------------------------------------------------------------- stragglers and kill

def test_escaped_process_holding_stdout_does_not_hang_wait(executor: ShellExecutor,
                                                           logs: Path, tmp_path: Path) -> None:
    marker = tmp_path / "escaped.pid"
    code = ("import os, sys, time\n"
            "os.setsid()\n"
            f"with open({str(marker) + '.tmp'!r}, 'w') as f: f.write(str(os.getpid()))\n"
            f"os.rename({str(marker) + '.tmp'!r}, {str(marker)!r})\n"
            "time.sleep(60)\n")
    command = (f"{python_command(code)} & "
               f"while [ ! -e {shlex.quote(str(marker))} ]; do sleep 0.02; done; "
               "echo leader-done")
    execution = executor.start(make_job(command), attempt=1, log_dir=logs)
    try:
        begin = time.monotonic()
        result = run(execution, limit=30)
        elapsed = time.monotonic() - begin
        assert result.ok, result.error
        assert (logs / "attempt-1.out").read_text() == "leader-done\n"
        assert elapsed < 10, "wait() must not wait for the escaped process"
    finally:
        deadline = time.monotonic() + DEADLINE
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        if marker.exists():
            os.kill(int(marker.read_text()), signal.SIGKILL)


def test_kill_during_heavy_output(executor: ShellExecutor, logs: Path,
                                  started: list[Execution]) -> None:
    execution = executor.start(make_job("yes; yes >&2"), attempt=1, log_dir=logs,
                               output_max_bytes=MiB, tail_bytes=10)
    started.append(execution)
    pgid = execution.pgid
    assert pgid is not None
    wait_for_output(execution, logs / "attempt-1.out", b"y\ny\n")
    result = execution.kill(5.0)
    assert result.signal == signal.SIGTERM
    assert result.stdout_tail is not None and set(result.stdout_tail) <= {"y", "\n"}
    assert group_gone(pgid)
    live = attempt_path(logs, 1, "out")
    assert on_disk(live) <= MiB
    assert set(kept(live)) <= set(b"y\n")


def test_kill_keeps_copying_output_during_grace(executor: ShellExecutor, logs: Path,
                                                started: list[Execution]) -> None:
    # The TERM handler writes far more than a pipe holds: unless kill()
    # copies while it waits, the handler blocks and gets SIGKILLed.
    command = ("trap 'head -c 3000000 /dev/zero; echo done-after-term; exit 0' TERM; "
               "echo ready; while :; do sleep 0.05; done")
    execution = executor.start(make_job(command), attempt=1, log_dir=logs)
    started.append(execution)
    wait_for_output(execution, logs / "attempt-1.out", b"ready\n")
    result = execution.kill(60.0)
    assert result.signal == signal.SIGTERM
    assert result.exit_code == 0
    out = (logs / "attempt-1.out").read_bytes()
    assert len(out) == 6 + 3_000_000 + 16
    assert out.endswith(b"\0done-after-term\n")


def test_no_descriptor_leaks(executor: ShellExecutor, logs: Path, tmp_path: Path) -> None:
    commands = ["true", "echo out; echo err >&2", "exit 3", "head -c 200000 /dev/zero",
                "sleep 60 & echo bg"]
    # Opens /dev/null, and a descriptor of this process's directory (to come
    # back to after starting a command elsewhere), once for all attempts.
    run(executor.start(make_job("true", cwd=str(tmp_path)), attempt=1, log_dir=logs))
    # Garbage of earlier tests in this process (which ones depends on the
    # order, and on the pytest-xdist worker) is closed now, not by a
    # collection in the middle of the count.
    gc.collect()
    before = open_fds()
    executions = []
    for i in range(200):
        kind = i % 7
        if kind < len(commands):
            execution = executor.start(make_job(commands[kind]), attempt=i, log_dir=logs,
                                       output_max_bytes=100_000, tail_bytes=100)
            run(execution)
        elif kind == 5:
            execution = executor.start(make_job("true", cwd=str(tmp_path / "missing")),
                                       attempt=i, log_dir=logs)
            assert execution.wait(0) is not None
        else:
            execution = executor.start(make_job("echo ready; sleep 60"), attempt=i,
                                       log_dir=logs)
            wait_for_output(execution, attempt_path(logs, i, "out"), b"ready")
            execution.kill(0)
        executions.append(execution)  # kept alive: closing must not rely on __del__
    after = open_fds()
    assert len(after) == len(before), (
        f"opened: {sorted(set(after.items()) - set(before.items()))}, "
        f"closed: {sorted(set(before.items()) - set(after.items()))}")


def test_without_pidfd(logs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                       started: list[Execution]) -> None:
    """Where there is no pidfd (not Linux), the exit is found by polling."""
    monkeypatch.delattr(os, "pidfd_open", raising=False)
    executor = ShellExecutor()
    result = run(executor.start(make_job("echo out; echo err >&2; sleep 60 & exit 3"),
                                attempt=1, log_dir=logs, tail_bytes=100))
    assert (result.exit_code, result.error) == (3, "err")
    assert (result.stdout_tail, result.stderr_tail) == ("out\n", "err\n")

    command = "echo first; while [ ! -e go ]; do sleep 0.02; done; echo second"
    execution = executor.start(make_job(command, cwd=str(tmp_path)), attempt=2, log_dir=logs)
    started.append(execution)
    wait_for_output(execution, logs / "attempt-2.out", b"first\n")
    (tmp_path / "go").touch()
    assert run(execution).ok
    assert (logs / "attempt-2.out").read_text() == "first\nsecond\n"

    execution = executor.start(make_job("trap '' TERM; yes"), attempt=3, log_dir=logs,
                               output_max_bytes=MiB)
    started.append(execution)
    pgid = execution.pgid
    assert pgid is not None
    wait_for_output(execution, logs / "attempt-3.out", b"y\ny\n")  # the trap is set
    result = execution.kill(0.2)
    assert result.signal == signal.SIGKILL
    assert group_gone(pgid)


def test_start_leaves_the_worker_where_it_was(executor: ShellExecutor, logs: Path,
                                              tmp_path: Path) -> None:
    """Commands start in their job's directory (posix_spawn cannot change
    directory: the executor steps there and back); the worker stays put."""
    here = os.getcwd()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = run(executor.start(make_job("pwd", cwd=str(elsewhere)), attempt=1, log_dir=logs))
    assert result.ok and attempt_path(logs, 1, "out").read_bytes() == f"{elsewhere}\n".encode()
    assert os.getcwd() == here
    failed = run(executor.start(make_job("true", cwd=str(tmp_path / "missing")), attempt=2,
                                log_dir=logs))
    assert failed.error is not None and failed.error.startswith("cannot run in ")
    assert os.getcwd() == here


def test_commands_get_only_stdin_stdout_and_stderr(executor: ShellExecutor, logs: Path,
                                                   tmp_path: Path) -> None:
    """As with close_fds: not even a descriptor made inheritable leaks."""
    fd = os.open(tmp_path, os.O_RDONLY)
    os.set_inheritable(fd, True)
    try:
        result = run(executor.start(make_job("ls /proc/self/fd"), attempt=1, log_dir=logs))
    finally:
        os.close(fd)
    assert result.ok
    listed = sorted(int(n) for n in attempt_path(logs, 1, "out").read_text().split())
    assert listed[:3] == [0, 1, 2] and len(listed) <= 4, listed  # (+ ls's own directory)


def test_commands_do_not_inherit_ignored_sigpipe(executor: ShellExecutor, logs: Path) -> None:
    """Python ignores SIGPIPE; a command must get the default back, or every
    pipeline that ends early prints "Broken pipe" errors."""
    result = run(executor.start(make_job("yes | head -c 1 >/dev/null; echo done"),
                                attempt=1, log_dir=logs, tail_bytes=1000))
    assert result.ok and result.stdout_tail == "done\n"
    assert not attempt_path(logs, 1, "err").exists(), attempt_path(logs, 1, "err").read_text()
