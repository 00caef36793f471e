"""queuectl's shell executor (the default).

Kept light: the implementation module is imported only when an executor is
built, so listing plugins costs nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from queuectl_core import hookimpl
from queuectl_core.registry import ExecutorSpec, PluginContext

if TYPE_CHECKING:
    from queuectl_core.executor import Executor

#: Upper bound for ``stderr_tail_bytes`` (1 MiB).
MAX_STDERR_TAIL_BYTES = 1024 * 1024


class ShellOptions(BaseModel):
    """``executors: {shell: {...}}`` in queuectl.yaml."""

    model_config = ConfigDict(extra="forbid")

    #: The shell that runs each command as ``<shell> -c <command>``.
    shell: str = Field(default="/bin/sh", min_length=1)
    #: How much of the end of stderr becomes the attempt's error message
    #: when the command fails.
    stderr_tail_bytes: int = Field(default=4096, ge=0, le=MAX_STDERR_TAIL_BYTES)
    #: Seconds between SIGTERM and SIGKILL when a command is stopped and the
    #: caller does not pass its own grace period.
    kill_grace_seconds: float = Field(default=2.0, ge=0, allow_inf_nan=False)


def _make_executor(options: ShellOptions | None, context: PluginContext) -> Executor:
    from .executor import ShellExecutor

    return ShellExecutor(options or ShellOptions())


@hookimpl
def queuectl_executors() -> Iterable[ExecutorSpec]:
    return [
        ExecutorSpec(
            name="shell",
            factory=_make_executor,
            options_model=ShellOptions,
            description="runs each command with /bin/sh -c in its own process group",
        )
    ]
