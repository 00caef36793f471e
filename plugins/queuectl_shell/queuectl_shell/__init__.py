"""queuectl's shell executor (the default), and the base for executors
that run local processes: ``ProcessExecutor``, ``Command``,
``ProcessOptions`` (see docs/writing-plugins.md).

Kept light: the implementation module is imported only when an executor is
built, so listing plugins costs nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from queuectl_core import hookimpl
from queuectl_core.registry import ExecutorSpec, PluginContext

if TYPE_CHECKING:
    from queuectl_core.executor import Executor

    from .executor import Command, ProcessExecutor, ShellExecutor
    from .options import MAX_STDERR_TAIL_BYTES, ProcessOptions, ShellOptions

__all__ = ["MAX_STDERR_TAIL_BYTES", "Command", "ProcessExecutor", "ProcessOptions",
           "ShellExecutor", "ShellOptions"]

def _make_executor(options: ShellOptions | None, context: PluginContext) -> Executor:
    from .executor import ShellExecutor

    return ShellExecutor(options)


@hookimpl
def queuectl_executors() -> Iterable[ExecutorSpec]:
    return [
        ExecutorSpec(
            name="shell",
            factory=_make_executor,
            options_model="queuectl_shell.options:ShellOptions",
            description="runs each command with /bin/sh -c in its own process group",
        )
    ]


def __getattr__(name: str) -> object:
    # ``from queuectl_shell import ShellOptions`` still works, without
    # importing pydantic for plugin discovery; the executor base likewise.
    if name in ("ShellOptions", "ProcessOptions", "MAX_STDERR_TAIL_BYTES"):
        from . import options

        return getattr(options, name)
    if name in ("ProcessExecutor", "ShellExecutor", "Command"):
        from . import executor

        return getattr(executor, name)
    raise AttributeError(name)
