"""Executors that run each attempt as a local process group.

:class:`ProcessExecutor` is the base that does the hard part: each attempt
runs in a new session (so it is its own process group, killed as a whole on
a timeout, a cancel or a stop), with stdin from /dev/null, the job's
environment, and stdout/stderr going to pipes. A subclass only says how to
turn a job into a command (:meth:`ProcessExecutor.command_for`: argv, extra
environment, directory). :class:`ShellExecutor`, the default executor, runs
``<shell> -c <command>``.

The execution copies both pipes to ``attempt-<N>.out`` / ``attempt-<N>.err``
(see :mod:`queuectl_core.joblogs`) as the command runs, without threads
(each file, and the job's directory, is created when its stream first
produces output, so a silent command costs no file-system writes):
:meth:`ShellExecution.wait` polls the shell's pidfd (when there is one) and
both pipes, and copies whatever arrives in bounded chunks. Each stream is
capped on disk by rotation, and the last bytes of each are kept in a bounded
in-memory ring for the result's tails and error message. Nothing the command
writes is ever held in memory without bound.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import select
import shutil
import signal
import time
from pathlib import Path

from queuectl_core.executor import Execution, Executor, Prepared
from queuectl_core.joblogs import attempt_path, remove_output_file
from queuectl_core.models import ExecResult, Job
from queuectl_core.records import Record, field
from queuectl_core.timeutil import shown

from .options import ProcessOptions, ShellOptions
from .output import EXIT_CANNOT_EXECUTE, EXIT_NOT_FOUND, _Output, exit_error
from .process import _Child, _group_running, _signal_group, _signal_text, spawn
from .script import script_path, too_long, write_script
from .strays import end_strays

log = logging.getLogger(__name__)

#: Bytes read from a pipe at a time (a Linux pipe holds 64 KiB by default).
CHUNK_BYTES = 64 * 1024
#: After the shell exits, how long output is still copied while something
#: outside its process group (e.g. started with ``setsid``) holds a pipe open.
DRAIN_SECONDS = 0.5
#: How often kill() checks whether the rest of the process group is gone,
#: and how often the exit is checked for when there is no pidfd.
_POLL_SLICE_SECONDS = 0.02

#: Shells of this process's running commands (not yet reaped).
_RUNNING: set[int] = set()


class FinishedExecution(Execution):
    """An attempt that ended before it ran (e.g. the shell could not start)."""

    def __init__(self, result: ExecResult) -> None:
        self._result = result

    def wait(self, timeout: float) -> ExecResult | None:
        return self._result

    def kill(self, grace: float | None = None) -> ExecResult:
        return self._result


class Command(Record, kw_only=True):
    """How one attempt runs (:meth:`ProcessExecutor.command_for`)."""

    #: The program and its arguments; ``argv[0]`` is looked up on PATH.
    argv: list[str]
    #: Variables set on top of the job's environment (the worker's, the
    #: job's ``env``, ``QUEUECTL_JOB_ID``, ``QUEUECTL_ATTEMPT``, ``QUEUECTL_QUEUE``,
    #: ``QUEUECTL_WORKER_ID``).
    env: dict[str, str] = field(default_factory=dict)
    #: Where it runs; None: the job's ``cwd`` (the worker's directory if unset).
    cwd: str | None = None
    #: Text written to a private file (``attempt-<N>.sh`` in the attempt's
    #: directory, removed when the attempt ends) whose path is appended to
    #: ``argv``: for a command too long to be an argument (``script.py``).
    script: str | None = None


class ProcessExecution(Execution):
    """One running command; its pid is also its pgid."""

    def __init__(self, proc: _Child, out: tuple[int, _Output], err: tuple[int, _Output],
                 options: ProcessOptions, tail_bytes: int, script: Path | None = None) -> None:
        self.pgid = self._pgid = proc.pid
        _RUNNING.add(proc.pid)
        self._script = script
        self._proc = proc
        self._options = options
        self._tail_bytes = tail_bytes
        self._result: ExecResult | None = None
        self._out = out[1]
        self._err = err[1]
        #: Read end of each pipe still open -> where its data goes.
        self._pipes = dict((out, err))
        self._poller = select.poll()
        for fd in self._pipes:
            self._poller.register(fd, select.POLLIN)
        self._buffer = bytearray(CHUNK_BYTES)
        self._view = memoryview(self._buffer)
        self._exited = False
        self._watching_exit = False
        # A pidfd becomes readable when the shell exits, so wait() learns of
        # the exit at once; without one, it checks every _POLL_SLICE_SECONDS.
        self._pidfd: int | None
        try:
            self._pidfd = os.pidfd_open(proc.pid)
        except (AttributeError, OSError):
            self._pidfd = None
        else:
            self._poller.register(self._pidfd, select.POLLIN)
            self._watching_exit = True

    # ------------------------------------------------------------ copying
    def _read(self, fd: int) -> None:
        try:
            count = os.readv(fd, [self._buffer])
        except BlockingIOError:
            return
        except OSError:
            count = 0
        if count:
            self._pipes[fd].feed(self._view[:count])
        else:  # EOF: every writer has closed it
            self._close_pipe(fd)

    def _close_pipe(self, fd: int) -> None:
        del self._pipes[fd]
        self._poller.unregister(fd)
        os.close(fd)

    def _poll(self, timeout: float) -> None:
        """Copy what arrives within ``timeout`` seconds (one round); notes
        the shell's exit if the pidfd says so."""
        pidfd = self._pidfd
        for fd, _ in self._poller.poll(max(0, math.ceil(timeout * 1000))):
            if fd == pidfd:
                self._exited = True
            else:
                self._read(fd)

    def _pump(self, deadline: float) -> bool:
        """Copy output until the shell exits (True) or ``deadline`` passes
        (False). With a pidfd the shell is left unreaped (a zombie), so its
        pid, which is the group id, cannot be reused until we reap it."""
        while True:
            if self._exited:
                return True
            remaining = deadline - time.monotonic()
            if self._pidfd is None:
                if self._proc.poll() is not None:
                    self._exited = True
                    return True
                remaining = min(remaining, _POLL_SLICE_SECONDS)
            self._poll(remaining)
            if not self._exited and time.monotonic() >= deadline:
                return False

    def _stop_watching_exit(self) -> None:
        """Once the shell has exited (or been SIGKILLed) its pidfd would
        make every poll return at once: take it out."""
        if self._watching_exit:
            assert self._pidfd is not None
            self._poller.unregister(self._pidfd)
            self._watching_exit = False

    def _drain(self) -> None:
        """Copy the rest of the output. The group is dead by now, so the pipes
        reach EOF at once, unless a process that left the group holds one:
        give up on it after DRAIN_SECONDS."""
        end = time.monotonic() + DRAIN_SECONDS
        while self._pipes:
            remaining = end - time.monotonic()
            if remaining <= 0:
                break
            self._poll(remaining)
        for fd in list(self._pipes):
            self._close_pipe(fd)

    def _close(self) -> None:
        for fd in list(self._pipes):
            self._close_pipe(fd)
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
        self._out.close()
        self._err.close()
        if self._script is not None:
            remove_output_file(self._script)
            self._script = None

    def _finish(self, sent: int | None) -> ExecResult:
        """Copy the rest of the output, reap the shell and build the result.
        ``sent`` is the signal kill() sent, if any."""
        try:
            self._stop_watching_exit()
            code = self._proc.wait()  # reaped: what it left outside its group is ours now
            _RUNNING.discard(self._pgid)
            end_strays(_RUNNING)
            self._drain()
        finally:
            self._close()
        tail_bytes = self._tail_bytes
        stdout_tail = self._out.tail(tail_bytes) if tail_bytes else None
        stderr_tail = self._err.tail(tail_bytes) if tail_bytes else None
        if code < 0:
            sig = -code
            result = ExecResult(signal=sig, error=f"killed by signal {_signal_text(sig)}",
                                stdout_tail=stdout_tail, stderr_tail=stderr_tail)
        elif sent is not None:
            result = ExecResult(
                exit_code=code, signal=sent,
                error=f"stopped with {_signal_text(sent)}; the command exited with code {code}",
                stdout_tail=stdout_tail, stderr_tail=stderr_tail,
            )
        else:
            error_bytes = self._options.stderr_tail_bytes
            stderr = self._err.tail(error_bytes).strip() if error_bytes and code else ""
            result = ExecResult(exit_code=code, error=exit_error(code, stderr),
                                stdout_tail=stdout_tail, stderr_tail=stderr_tail)
        problems = [p for p in (self._out.problem, self._err.problem) if p]
        if problems:
            # The command ran; only (part of) its output is missing. Say so
            # in the attempt's record, without changing its outcome.
            note = "output not stored: " + "; ".join(problems)
            result = result.replace(error=f"{result.error} ({note})" if result.error else note)
        self._result = result
        return result

    # ------------------------------------------------------------ Execution
    def wait(self, timeout: float) -> ExecResult | None:
        if self._result is not None:
            return self._result
        if not self._pump(time.monotonic() + max(0.0, timeout)):
            return None
        # Background processes the command left behind die with it.
        _signal_group(self._pgid, signal.SIGKILL)
        return self._finish(None)

    def kill(self, grace: float | None = None) -> ExecResult:
        """SIGTERM the group; once the shell has exited, the rest of the group
        gets what is left of ``grace`` (default: the ``kill_grace_seconds``
        option) to exit too; then SIGKILL whatever remains. Output is copied
        all the while, so a command that writes as it shuts down is not
        blocked on a full pipe."""
        done = self.wait(0)
        if done is not None:
            return done
        if grace is None:
            grace = self._options.kill_grace_seconds
        deadline = time.monotonic() + max(0.0, grace)
        pgid = self._pgid
        _signal_group(pgid, signal.SIGTERM)
        sent = signal.SIGTERM
        if self._pump(deadline):
            self._stop_watching_exit()
            self._proc.wait()  # reap, so that the group can empty
            while _group_running(pgid) and time.monotonic() < deadline:
                self._poll(min(_POLL_SLICE_SECONDS, deadline - time.monotonic()))
        else:
            sent = signal.SIGKILL
        _signal_group(pgid, signal.SIGKILL)
        return self._finish(sent)

    def __del__(self) -> None:
        # An execution dropped while still running must not leak descriptors.
        if getattr(self, "_result", True) is None:
            with contextlib.suppress(Exception):
                self._close()


class _Ready(Prepared):
    """An attempt whose result is known before it starts (it cannot)."""

    def __init__(self, execution: Execution, job: Job) -> None:
        self._execution = execution
        self.job = job

    def start(self) -> Execution:
        return self._execution


class _ProcessPrepared(Prepared):
    """A command ready to spawn: its pipes are open, argv, environment and
    directory settled."""

    def __init__(self, executor: ProcessExecutor, job: Job, argv: list[str],
                 env: dict[bytes, bytes], cwd: str | None, out: tuple[int, _Output, int],
                 err: tuple[int, _Output, int], tail_bytes: int,
                 script: Path | None = None) -> None:
        self._shell = executor
        self._script = script
        self.job = job
        self._argv = argv
        self._env = env
        self._cwd = cwd
        self._out = out
        self._err = err
        self._tail_bytes = tail_bytes
        self._used = False

    def _close_pipes(self) -> None:
        for fd in (self._out[0], self._out[2], self._err[0], self._err[2]):
            os.close(fd)
        if self._script is not None:
            remove_output_file(self._script)

    def start(self) -> Execution:
        assert not self._used, "a prepared attempt starts once"
        self._used = True
        shell = self._shell
        (out_r, out, out_w), (err_r, err, err_w) = self._out, self._err
        try:
            proc = shell._spawn(self._argv, self._cwd, self._env, shell._stdin(), out_w,
                                err_w)
        except (OSError, ValueError) as exc:
            self._close_pipes()
            return shell._not_started(self._argv[0], self._cwd, exc, out, err,
                                      self._tail_bytes)
        except BaseException:
            self._close_pipes()
            out.close()
            err.close()
            raise
        os.close(out_w)
        os.close(err_w)
        return ProcessExecution(proc, (out_r, out), (err_r, err), shell.options,
                                self._tail_bytes, self._script)

    def discard(self) -> None:
        if not self._used:
            self._used = True
            self._close_pipes()
            self._out[1].close()
            self._err[1].close()

    def __del__(self) -> None:
        # Dropped without a start or a discard: do not leak its descriptors.
        if not getattr(self, "_used", True):
            with contextlib.suppress(Exception):
                self.discard()


class ProcessExecutor(Executor):
    """Starts one local process group per attempt, running the command that
    :meth:`command_for` makes of the job. A subclass overrides that method
    (and usually ``options_model`` and ``label``); everything else, from the
    process group, its timeout and kill, to the capped per-attempt logs, the
    tails and the environment, is done here, as for the shell executor."""

    #: The options this executor takes (its ``ExecutorSpec.options_model``
    #: should be the same model, or a subclass of ``ProcessOptions``).
    options_model: type[ProcessOptions] = ProcessOptions
    #: What ``argv[0]`` is, in messages: "program not found: 'nice': ...".
    label = "program"

    def __init__(self, options: ProcessOptions | None = None) -> None:
        self.options = options or self.options_model()
        self._devnull = -1
        #: The worker's own directory (see _spawn).
        self._here = -1

    def _stdin(self) -> int:
        """/dev/null, opened once for all attempts (the child gets a copy)."""
        if self._devnull < 0:
            self._devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        return self._devnull

    def close(self) -> None:
        if self._devnull >= 0:
            os.close(self._devnull)
            self._devnull = -1
        if self._here >= 0:
            os.close(self._here)
            self._here = -1

    def __del__(self) -> None:
        if getattr(self, "_devnull", -1) >= 0 or getattr(self, "_here", -1) >= 0:
            self.close()

    def _spawn(self, argv: list[str], cwd: str | None, env: dict[bytes, bytes], stdin: int,
               stdout: int, stderr: int) -> _Child:
        """Start the shell (:func:`.process.spawn`), coming back to the
        worker's own directory by a descriptor kept open for it."""
        if cwd is not None and self._here < 0:
            self._here = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        return spawn(argv, cwd, env, (stdin, stdout, stderr), self._here)

    def check(self) -> str | None:
        """The ``shell`` option, if the options have one, names a program
        this machine can run."""
        shell = getattr(self.options, "shell", None)
        if isinstance(shell, str) and shutil.which(shell) is None:
            return f"shell not found: {shell!r} is not a program on this machine (option 'shell')"
        return None

    def command_for(self, job: Job, attempt: int) -> Command:
        """The command for attempt number ``attempt`` of ``job``: override.
        Called in the worker, before the attempt starts (a busy worker calls
        it for its next job while the current one runs); raising fails the
        attempt with the exception as its error."""
        raise NotImplementedError(f"{type(self).__name__} must define command_for()")

    def _environment(self, job: Job, attempt: int) -> dict[bytes, bytes]:
        # bytes: no decoding and re-encoding of each entry. os.environb keeps
        # its entries in a plain dict (``_data``): copying that is one C call
        # instead of a Python-level lookup per variable.
        data = getattr(os.environb, "_data", None)
        env: dict[bytes, bytes] = dict(data) if isinstance(data, dict) else dict(os.environb)
        for name in self.hidden_env:  # secrets plugins declare (a DSN with its password)
            env.pop(os.fsencode(name), None)
        if job.env:
            for key, value in job.env.items():
                env[os.fsencode(key)] = os.fsencode(value)
        env[b"QUEUECTL_JOB_ID"] = os.fsencode(job.id)
        env[b"QUEUECTL_ATTEMPT"] = str(attempt).encode()
        env[b"QUEUECTL_QUEUE"] = os.fsencode(job.queue)
        if job.worker_id:
            # Unique to this worker (host:pid:random): what tells this queue's
            # commands from another queue's job of the same id and attempt.
            env[b"QUEUECTL_WORKER_ID"] = os.fsencode(job.worker_id)
        return env

    def start(self, job: Job, *, attempt: int, log_dir: Path, output_max_bytes: int = 0,
              tail_bytes: int = 0) -> Execution:
        return self._prepare(job, attempt, log_dir, output_max_bytes, tail_bytes).start()

    def prepare(self, job: Job, *, attempt: int, log_dir: Path, output_max_bytes: int = 0,
                tail_bytes: int = 0) -> Prepared:
        """The output streams, their pipes, argv and environment, ready for
        the spawn (the descriptors to close in the child and the directory
        are settled at the start itself). A subclass that overrides
        :meth:`start` keeps it: its attempts are prepared the default way,
        which calls that ``start``."""
        if type(self).start is not ProcessExecutor.start:
            return super().prepare(job, attempt=attempt, log_dir=log_dir,
                                   output_max_bytes=output_max_bytes, tail_bytes=tail_bytes)
        return self._prepare(job, attempt, log_dir, output_max_bytes, tail_bytes)

    def _prepare(self, job: Job, attempt: int, log_dir: Path, output_max_bytes: int,
                 tail_bytes: int) -> Prepared:
        try:
            command = self.command_for(job, attempt)
        except Exception as exc:
            return _Ready(FinishedExecution(ExecResult(
                error=f"{type(self).__name__}.command_for failed: {exc!r}")), job)
        env = self._environment(job, attempt)
        for key, value in command.env.items():
            env[os.fsencode(key)] = os.fsencode(value)
        cwd = command.cwd if command.cwd is not None else job.cwd
        argv, script = list(command.argv), None
        if command.script is not None:
            script = script_path(log_dir, attempt)
            try:
                write_script(script, command.script)
            except OSError as exc:
                return _Ready(FinishedExecution(ExecResult(
                    error=f"cannot write the command to {shown(str(script))}: {exc}")), job)
            argv.append(str(script))
        out = _Output(attempt_path(log_dir, attempt, "out"), output_max_bytes, tail_bytes)
        err = _Output(attempt_path(log_dir, attempt, "err"), output_max_bytes,
                      max(tail_bytes, self.options.stderr_tail_bytes))
        pipes: list[int] = []
        try:
            out_r, out_w = os.pipe()  # both ends close-on-exec; the child gets dup2 copies
            pipes += (out_r, out_w)
            err_r, err_w = os.pipe()
            pipes += (err_r, err_w)
        except OSError as exc:
            for fd in pipes:
                os.close(fd)
            out.close()
            err.close()
            if script is not None:
                remove_output_file(script)
            return _Ready(FinishedExecution(
                ExecResult(error=f"cannot create output pipes: {exc}")), job)
        return _ProcessPrepared(self, job, argv, env, cwd, (out_r, out, out_w),
                                (err_r, err, err_w), tail_bytes, script)

    def _not_started(self, program: str, cwd: str | None, exc: Exception, out: _Output,
                     err: _Output, tail_bytes: int) -> FinishedExecution:
        """The attempt's result when the command could not be started: the
        message also goes to the attempt's .err file."""
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        code: int | None
        if (isinstance(exc, OSError) and cwd is not None and exc.filename == cwd
                and (cwd != program or not os.path.isdir(cwd))):
            # Popen names the directory when chdir() failed in the child.
            code, message = None, f"cannot run in {shown(cwd)}: {detail}"
        else:
            if isinstance(exc, FileNotFoundError):
                code, what = EXIT_NOT_FOUND, f"{self.label} not found"
            else:
                code, what = EXIT_CANNOT_EXECUTE, f"cannot run the {self.label}"
            message = f"{what}: {program!r}: {detail} (exit {code})"
        err.feed(memoryview(f"queuectl-shell: {message}\n".encode()))
        out.close()
        err.close()
        return FinishedExecution(ExecResult(
            exit_code=code, error=message,
            stdout_tail=out.tail(tail_bytes) if tail_bytes else None,
            stderr_tail=err.tail(tail_bytes) if tail_bytes else None,
        ))


class ShellExecutor(ProcessExecutor):
    """The default executor: ``<shell> -c <command>``, one process group per
    attempt."""

    options_model = ShellOptions
    label = "shell"
    options: ShellOptions

    def command_for(self, job: Job, attempt: int) -> Command:
        if too_long(job.command):  # `sh FILE`: no argument over the kernel's 128 KiB
            return Command(argv=[self.options.shell], script=job.command)
        return Command(argv=[self.options.shell, "-c", job.command])


#: The name this class had before ProcessExecutor was split out of it.
ShellExecution = ProcessExecution
