"""Options of the shell executor (``executors: {shell: {...}}`` in
queuectl.yaml) and of any executor built on ``ProcessExecutor``: pydantic
models imported only when they are needed."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from queuectl_core.durations import Seconds

#: Upper bound for ``stderr_tail_bytes`` (1 MiB).
MAX_STDERR_TAIL_BYTES = 1024 * 1024


class ProcessOptions(BaseModel):
    """What every executor built on ``ProcessExecutor`` takes; an executor's
    own options model subclasses it (``ShellOptions`` adds ``shell``)."""

    model_config = ConfigDict(extra="forbid")

    #: How much of the end of stderr becomes the attempt's error message
    #: when the command fails (independent of the ``output_tail_bytes``
    #: setting, which sizes the result's ``stdout_tail`` / ``stderr_tail``).
    stderr_tail_bytes: int = Field(default=4096, ge=0, le=MAX_STDERR_TAIL_BYTES)
    #: Seconds between SIGTERM and SIGKILL when a command is stopped and the
    #: caller does not pass its own grace period.
    kill_grace_seconds: Seconds = Field(default=2.0, ge=0, allow_inf_nan=False)


class ShellOptions(ProcessOptions):
    """``executors: {shell: {...}}`` in queuectl.yaml."""

    #: The shell that runs each command as ``<shell> -c <command>``.
    shell: str = Field(default="/bin/sh", min_length=1)
