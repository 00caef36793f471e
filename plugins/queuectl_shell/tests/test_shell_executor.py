"""The shell executor against real processes (no mocks)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

import queuectl_shell
from queuectl_core.executor import Execution
from queuectl_core.models import ExecResult, Job
from queuectl_core.plugins import build_plugins
from queuectl_core.registry import PluginContext
from queuectl_shell.executor import ShellExecutor
from queuectl_shell.options import ShellOptions

DEADLINE = 15.0  # generous: some inits reap orphaned zombies only every few seconds


def make_job(command: str, job_id: str = "job-1") -> Job:
    return Job(id=job_id, command=command, state="processing", max_retries=3,
               run_at=0, created_at=0, updated_at=0)


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
    assert (logs / "attempt-1.err").read_bytes() == b""
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
    execution = executor.start(make_job("trap '' TERM; sleep 60; echo never"), attempt=1,
                               log_dir=logs)
    started.append(execution)
    pgid = execution.pgid
    assert pgid is not None
    assert execution.wait(0.2) is None  # let the trap be set
    begin = time.monotonic()
    result = execution.kill(0.3)
    assert time.monotonic() - begin < 5.0
    assert result.signal == signal.SIGKILL
    assert result.error == "killed by signal SIGKILL (9)"
    assert group_gone(pgid)


def test_kill_when_command_exits_itself_on_sigterm(executor: ShellExecutor, logs: Path,
                                                   started: list[Execution]) -> None:
    command = "trap 'exit 0' TERM; while :; do sleep 0.05; done"
    execution = executor.start(make_job(command), attempt=1, log_dir=logs)
    started.append(execution)
    assert execution.wait(0.2) is None
    result = execution.kill(5.0)
    # A command stopped by kill() is never reported as a success.
    assert not result.ok
    assert result.signal == signal.SIGTERM


def test_kill_uses_option_grace_by_default(logs: Path, started: list[Execution]) -> None:
    executor = ShellExecutor(ShellOptions(kill_grace_seconds=0.2))
    execution = executor.start(make_job("trap '' TERM; sleep 60"), attempt=1, log_dir=logs)
    started.append(execution)
    assert execution.wait(0.2) is None
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


def test_unwritable_log_dir_fails_without_raising(executor: ShellExecutor,
                                                  tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = executor.start(make_job("echo hi"), attempt=1, log_dir=blocker / "logs").wait(0)
    assert result is not None
    assert not result.ok
    assert result.error is not None and "log files" in result.error


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
    assert spec.factory is not None
    executor = spec.factory(ShellOptions(), PluginContext(home=tmp_path))
    result = run(executor.start(make_job("echo via-factory"), attempt=1, log_dir=tmp_path))
    assert result.ok
    assert (tmp_path / "attempt-1.out").read_text() == "via-factory\n"


def test_plugin_manager_selects_shell(tmp_path: Path) -> None:
    plugins = build_plugins(entry_points=False)
    plugins.register(queuectl_shell, name="shell")
    spec = plugins.executor("shell")
    assert spec.factory is not None
    executor = spec.factory(None, PluginContext(home=tmp_path))
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
