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

from .models import ExecResult, Job


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


class Executor(ABC):
    """Starts executions. One instance serves one worker process."""

    @abstractmethod
    def start(self, job: Job, *, attempt: int, log_dir: Path, output_max_bytes: int = 0,
              tail_bytes: int = 0) -> Execution:
        """Start ``job.command`` for attempt number ``attempt`` (the attempt
        record's number, unique within the job).

        The command runs in ``job.cwd`` (the worker's directory if None) with
        the worker's environment plus ``job.env``, plus ``QUEUECTL_JOB_ID``,
        ``QUEUECTL_ATTEMPT`` (= ``attempt``) and ``QUEUECTL_QUEUE``. A missing
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
