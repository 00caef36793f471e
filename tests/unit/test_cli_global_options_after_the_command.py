"""The global options after a command: a command's own option of the same
name wins, and no command has one today (the end-to-end behaviour is in
tests/integration/test_global_options_after_the_command.py)."""

from __future__ import annotations

from typing import Any

import click

from queuectl_core.cli import main as cli_main
from queuectl_core.cli.main import COMMANDS, GLOBAL_OPTIONS, State, with_global_options

GLOBAL = {"--backend", "--config", "--home"}


def test_a_commands_own_option_of_that_name_wins() -> None:
    seen: dict[str, Any] = {}

    @click.command()
    @click.option("--config", "own_config")
    @click.pass_obj
    def cmd(state: State, own_config: str | None) -> None:
        seen.update(own=own_config, state=(state.home, state.config, state.backend))

    @click.group()
    @click.pass_context
    def group(ctx: click.Context) -> None:
        ctx.obj = State(None, None, None)

    group.add_command(with_global_options(cmd))
    assert with_global_options(cmd) is cmd  # once only
    added = [p for p in cmd.params if p.hidden]  # type: ignore[attr-defined]
    assert sorted(o for p in added for o in p.opts) == ["--backend", "--home"]
    group.main(["cmd", "--config", "mine", "--home", "H", "--backend", "b"],
               standalone_mode=False)
    assert seen == {"own": "mine", "state": ("H", None, "b")}


def test_no_command_has_an_option_named_like_a_global_one() -> None:
    """A collision would make that command's option win after it: none today."""
    ctx = click.Context(cli_main.cli)
    assert set(GLOBAL_OPTIONS.values()) == {"backend", "config", "home"}

    def check(command: click.Command, path: str) -> None:
        hidden = {o for p in command.params if getattr(p, "hidden", False) for o in p.opts}
        shown = {o for p in command.params if not getattr(p, "hidden", False)
                 for o in (*p.opts, *p.secondary_opts)}
        assert hidden == GLOBAL, path
        assert not shown & GLOBAL, path
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                check(sub, f"{path} {name}")

    for name in COMMANDS:
        command = cli_main.cli.get_command(ctx, name)
        assert command is not None
        check(command, name)
