"""The entry point (``nice = "queuectl_nice.plugin"``): the executor's
record, its factory and options model named by path (nothing heavy is
imported to list plugins)."""

from __future__ import annotations

from collections.abc import Iterable

from queuectl_core import hookimpl
from queuectl_core.registry import ExecutorSpec


@hookimpl
def queuectl_executors() -> Iterable[ExecutorSpec]:
    return [ExecutorSpec(name="nice", factory="queuectl_nice.executor:make_executor",
                         options_model="queuectl_nice.executor:NiceOptions",
                         description="runs each command with the shell under nice and ionice "
                                     "(example plugin: examples/queuectl-nice)")]
