"""The shell executor: each attempt runs ``<shell> -c <command>`` in a new
session (so it is its own process group), with stdin from /dev/null and
stdout/stderr going to ``attempt-<N>.out`` / ``attempt-<N>.err`` in the
attempt's log directory. Nothing the command writes is held in memory except
the bounded stderr tail read for the error message.
"""

from __future__ import annotations

import math
import os
import select
import signal
import subprocess
import time
from pathlib import Path
from typing import BinaryIO

from queuectl_core.executor import Execution, Executor
from queuectl_core.models import ExecResult, Job

from .options import ShellOptions

#: What POSIX shells exit with when a command is not found / not executable.
EXIT_NOT_FOUND = 127
EXIT_CANNOT_EXECUTE = 126

#: How often kill() checks whether the rest of the process group is gone.
_GROUP_POLL_SECONDS = 0.02


def _signal_text(num: int) -> str:
    """``SIGKILL (9)``; unknown numbers as ``signal 42``."""
    try:
        return f"{signal.Signals(num).name} ({num})"
    except ValueError:
        return f"signal {num}"


def _signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to the process group; False if the group is gone."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:  # a member we may not signal (e.g. setuid): nothing to do
        pass
    return True


def _read_tail(path: Path, limit: int, start: int = 0) -> str:
    """The last ``limit`` bytes of ``path`` written after offset ``start``,
    as stripped text ('' if none)."""
    if limit <= 0:
        return ""
    try:
        with path.open("rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(start, size - limit))
            data = fh.read(limit)
    except OSError:
        return ""
    return data.decode("utf-8", errors="replace").strip()


def exit_error(code: int, stderr_tail: str) -> str | None:
    """The error message for a command that exited with ``code``."""
    if code == 0:
        return None
    if code == EXIT_NOT_FOUND and "not found" not in stderr_tail:
        prefix = f"command not found (exit {EXIT_NOT_FOUND})"
        return f"{prefix}: {stderr_tail}" if stderr_tail else prefix
    return stderr_tail or f"command exited with code {code}"


def _open_private(path: Path) -> BinaryIO:
    """Open for appending, created 0600: job output is private to the user."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    return os.fdopen(fd, "ab")


class FinishedExecution(Execution):
    """An attempt that ended before it ran (e.g. the shell could not start)."""

    def __init__(self, result: ExecResult) -> None:
        self._result = result

    def wait(self, timeout: float) -> ExecResult | None:
        return self._result

    def kill(self, grace: float | None = None) -> ExecResult:
        return self._result


class ShellExecution(Execution):
    """One running ``<shell> -c <command>``; its pid is also its pgid."""

    def __init__(self, proc: subprocess.Popen[bytes], err_path: Path, err_start: int,
                 options: ShellOptions) -> None:
        self.pgid = self._pgid = proc.pid
        self._proc = proc
        self._err_path = err_path
        self._err_start = err_start
        self._options = options
        self._result: ExecResult | None = None
        # A pidfd becomes readable when the process exits, so wait() returns
        # at once instead of polling; without one, fall back to Popen.wait.
        self._pidfd: int | None
        try:
            self._pidfd = os.pidfd_open(proc.pid)
        except (AttributeError, OSError):
            self._pidfd = None

    # ------------------------------------------------------------ helpers
    def _leader_exited(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the shell to exit. With a pidfd
        it is left unreaped (a zombie), so its pid, which is the group id,
        cannot be reused until we reap it."""
        timeout = max(0.0, timeout)
        if self._proc.returncode is not None:
            return True
        if self._pidfd is not None:
            poller = select.poll()
            poller.register(self._pidfd, select.POLLIN)
            return bool(poller.poll(math.ceil(timeout * 1000)))
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def _finish(self, sent: int | None) -> ExecResult:
        """Reap the shell and build the result. ``sent`` is the signal kill()
        sent, if any."""
        code = self._proc.wait()
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
        if code < 0:
            sig = -code
            result = ExecResult(signal=sig, error=f"killed by signal {_signal_text(sig)}")
        elif sent is not None:
            result = ExecResult(
                exit_code=code, signal=sent,
                error=f"stopped with {_signal_text(sent)}; the command exited with code {code}",
            )
        else:
            tail = _read_tail(self._err_path, self._options.stderr_tail_bytes,
                              self._err_start)
            result = ExecResult(exit_code=code, error=exit_error(code, tail))
        self._result = result
        return result

    # ------------------------------------------------------------ Execution
    def wait(self, timeout: float) -> ExecResult | None:
        if self._result is None and self._leader_exited(timeout):
            # Background processes the command left behind die with it.
            _signal_group(self._pgid, signal.SIGKILL)
            return self._finish(None)
        return self._result

    def kill(self, grace: float | None = None) -> ExecResult:
        """SIGTERM the group; once the shell has exited, the rest of the group
        gets what is left of ``grace`` (default: the ``kill_grace_seconds``
        option) to exit too; then SIGKILL whatever remains."""
        done = self.wait(0)
        if done is not None:
            return done
        if grace is None:
            grace = self._options.kill_grace_seconds
        deadline = time.monotonic() + max(0.0, grace)
        pgid = self._pgid
        _signal_group(pgid, signal.SIGTERM)
        sent = signal.SIGTERM
        if self._leader_exited(grace):
            self._proc.wait()  # reap, so that the group can empty
            while _signal_group(pgid, 0) and time.monotonic() < deadline:
                time.sleep(_GROUP_POLL_SECONDS)
        else:
            sent = signal.SIGKILL
        _signal_group(pgid, signal.SIGKILL)
        return self._finish(sent)

    def __del__(self) -> None:
        # An execution dropped while still running must not leak its pidfd.
        pidfd = getattr(self, "_pidfd", None)
        if pidfd is not None:
            os.close(pidfd)


class ShellExecutor(Executor):
    """Starts one ``<shell> -c <command>`` process group per attempt."""

    def __init__(self, options: ShellOptions | None = None) -> None:
        self.options = options or ShellOptions()

    def start(self, job: Job, *, attempt: int, log_dir: Path) -> Execution:
        shell = self.options.shell
        out_path = log_dir / f"attempt-{attempt}.out"
        err_path = log_dir / f"attempt-{attempt}.err"
        env = dict(os.environ)
        env["QUEUECTL_JOB_ID"] = job.id
        env["QUEUECTL_ATTEMPT"] = str(attempt)
        try:
            log_dir.mkdir(parents=True, exist_ok=True)
            # The files are opened here and closed once the child has its own
            # copies, so output never passes through (or blocks on) a pipe.
            # Append: an attempt number can repeat (a forced stop gives the
            # attempt back, `dlq retry` restarts the count), and earlier
            # output must not be lost. The error tail is read from this
            # run's own start offset.
            with _open_private(out_path) as out, _open_private(err_path) as err:
                err_start = err.seek(0, os.SEEK_END)
                try:
                    proc = subprocess.Popen(
                        [shell, "-c", job.command],
                        stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                        env=env, close_fds=True, start_new_session=True,
                    )
                except (OSError, ValueError) as exc:
                    if isinstance(exc, FileNotFoundError):
                        code, what = EXIT_NOT_FOUND, "shell not found"
                    else:
                        code, what = EXIT_CANNOT_EXECUTE, "cannot run the shell"
                    detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
                    message = f"{what}: {shell!r}: {detail} (exit {code})"
                    err.write(f"queuectl-shell: {message}\n".encode())
                    return FinishedExecution(ExecResult(exit_code=code, error=message))
        except OSError as exc:
            return FinishedExecution(
                ExecResult(error=f"cannot create the attempt's log files in {log_dir}: {exc}")
            )
        return ShellExecution(proc, err_path, err_start, self.options)
