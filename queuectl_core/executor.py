"""The execution seam: how a job's command is run.

An executor plugin registers an :class:`~queuectl_core.registry.ExecutorSpec`
whose factory returns an :class:`Executor`. The worker starts one
:class:`Execution` per attempt and waits on it in short slices, so that it can
renew its lease between them; it never blocks on the command for longer than
it asks to.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from .models import ExecResult, Job

#: Children of this process that run no job (the DLQ handlers the
#: ``command`` notifier starts): an executor ending what a job left behind
#: (:func:`queuectl_core.worker.procs.become_subreaper`) leaves them alone.
#: Add a pid when the child starts, discard it once reaped.
OTHER_CHILDREN: set[int] = set()


class Execution(ABC):
    """One running attempt."""

    #: Process group id of the command, if it runs as a local process group.
    #: The worker records it so that the group can be killed if the worker
    #: itself is killed.
    pgid: int | None = None

    @abstractmethod
    def wait(self, timeout: float) -> ExecResult | None:
        """Wait at most ``timeout`` seconds; the result once the command has
        finished, else None."""

    @abstractmethod
    def kill(self, grace: float | None = None) -> ExecResult:
        """Stop the command and everything it started: SIGTERM to the whole
        process group, SIGKILL after ``grace`` seconds (None: the executor's
        own default, which should stay well below the lease length, since the
        worker sends no heartbeat while it waits). The result of a killed
        command always has ``signal`` set, so it never counts as success."""


class Prepared:
    """An attempt made ready to start (:meth:`Executor.prepare`): everything
    but the start itself. The worker calls exactly one of :meth:`start` or
    :meth:`discard`, once.

    This default does nothing ahead of time: :meth:`start` calls
    :meth:`Executor.start` with the same arguments."""

    def __init__(self, executor: Executor, job: Job, **options: Any) -> None:
        self._executor = executor
        self.job = job
        self._options = options

    def start(self) -> Execution:
        """Start the command, as :meth:`Executor.start` does (raising counts
        as a failed attempt)."""
        return self._executor.start(self.job, **self._options)

    def discard(self) -> None:
        """The attempt will not start here (its claim went back to the
        queue): release whatever was set up for it."""


class Executor(ABC):
    """Starts executions. One instance serves one worker process."""

    #: Variables of the worker's environment that no command may see: the
    #: secrets plugins declare (``secret_env`` in their records), set by the
    #: core when it builds the executor. A job's own ``env`` may still set them.
    hidden_env: frozenset[str] = frozenset()

    def check(self) -> str | None:
        """A problem of this machine's setup that would fail every attempt
        (a missing shell), or None. ``worker start`` and ``worker run``
        refuse to start workers when there is one. Default: None."""
        return None

    def prepare(self, job: Job, *, attempt: int, log_dir: Path, output_max_bytes: int = 0,
                tail_bytes: int = 0) -> Prepared:
        """Set up everything for :meth:`start` that can be done before the
        start itself (optional; the default sets up nothing). A busy worker
        prepares its next job while the current command runs, so that the
        next command starts as soon as the current one ends. What the
        command would see must not depend on when this was called; anything
        that can change in between (the directory, descriptors to close) is
        left to :meth:`Prepared.start`. The arguments are those of
        :meth:`start`."""
        return Prepared(self, job, attempt=attempt, log_dir=log_dir,
                        output_max_bytes=output_max_bytes, tail_bytes=tail_bytes)

    @abstractmethod
    def start(self, job: Job, *, attempt: int, log_dir: Path, output_max_bytes: int = 0,
              tail_bytes: int = 0) -> Execution:
        """Start ``job.command`` for attempt number ``attempt`` (the attempt
        record's number, unique within the job).

        The command runs in ``job.cwd`` (the worker's directory if None) with
        the worker's environment less :attr:`hidden_env`, plus ``job.env``,
        plus ``QUEUECTL_JOB_ID``, ``QUEUECTL_ATTEMPT`` (= ``attempt``),
        ``QUEUECTL_QUEUE`` and ``QUEUECTL_WORKER_ID`` (= ``job.worker_id``). A missing
        ``cwd`` ends the attempt as failed, with an error naming it.

        Output is streamed to the files named by
        :func:`queuectl_core.joblogs.attempt_path` under ``log_dir``, never
        held in memory without bound. ``log_dir`` may not exist yet: create
        it (private, :func:`queuectl_core.joblogs.open_output_file`) and a
        stream's file when that stream first produces output, so that an
        attempt that writes nothing leaves no files (``queuectl logs`` then
        prints nothing for it, knowing from the attempt's worker id that it
        ran on this machine). With
        ``output_max_bytes`` > 0, each stream keeps at most that many bytes
        on disk, the newest (see :mod:`queuectl_core.joblogs` for how). The
        result's ``stdout_tail`` / ``stderr_tail`` hold the last
        ``tail_bytes`` of each stream (None when ``tail_bytes`` is 0).
        Raising an exception counts as a failed attempt. The job's timeout
        is the worker's business: it calls :meth:`Execution.kill`."""
