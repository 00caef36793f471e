"""The executor: ``nice -n N ionice -c CLASS <shell> -c <command>``. Only
the command line is ours; ``ProcessExecutor`` runs it (process group,
timeouts and kill, capped logs, tails, the job's environment)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from queuectl_core.models import Job
from queuectl_core.registry import PluginContext
from queuectl_shell import Command, ProcessExecutor, ShellOptions

IO_CLASSES = {"realtime": "1", "best-effort": "2", "idle": "3"}


class NiceOptions(ShellOptions):
    """``executors: {nice: {...}}`` in queuectl.yaml (and ``shell``,
    ``stderr_tail_bytes``, ``kill_grace_seconds`` as for ``shell``)."""

    #: CPU niceness, 0 (normal) to 19 (only when nothing else runs).
    niceness: int = Field(default=10, ge=0, le=19)
    #: I/O scheduling class: ``idle`` gets the disk when no one else wants it.
    io_class: Literal["best-effort", "idle"] = "idle"


class NiceExecutor(ProcessExecutor):
    options_model = NiceOptions
    options: NiceOptions

    def command_for(self, job: Job, attempt: int) -> Command:
        o = self.options
        return Command(argv=["nice", "-n", str(o.niceness), "ionice", "-c",
                             IO_CLASSES[o.io_class], o.shell, "-c", job.command])


def make_executor(options: NiceOptions | None, context: PluginContext) -> NiceExecutor:
    return NiceExecutor(options)
