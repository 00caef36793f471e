"""The web plugin's hook implementation (the ``queuectl`` entry point).

Kept light: the command is named by its import path, so listing plugins
imports neither it nor FastAPI."""

from __future__ import annotations

from collections.abc import Iterable

from queuectl_core import hookimpl
from queuectl_core.registry import CommandSpec


@hookimpl
def queuectl_cli_commands() -> Iterable[CommandSpec]:
    return [CommandSpec(name="serve", factory="queuectl_web.cli:serve_command",
                        description="Serve the web dashboard, /metrics and a JSON API.")]
