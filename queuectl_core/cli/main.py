"""Entry point: global options, lazy command loading and error handling.

Heavy modules (pydantic models, plugins, storage) are imported inside the
commands that need them, so ``queuectl --help`` stays cheap.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

import click

from .. import __version__

if TYPE_CHECKING:
    from collections.abc import Iterable

    from ..app import App
    from ..registry import CommandSpec


class State:
    """Global options, resolved into an App on first use."""

    def __init__(self, home: str | None, config: str | None, backend: str | None) -> None:
        self.home = home
        self.config = config
        self.backend = backend
        self._app: App | None = None

    def app(self) -> App:
        """The App of the global options; without any, the one the start-up
        cache seeds when it holds (no pluggy, YAML or pydantic until a
        command needs them), as ``enqueue`` and ``status`` get it."""
        if self._app is None:
            from ..app import App
            from ..config import resolve_config

            mode = os.environ.get("QUEUECTL_STARTUP_CACHE", "1")
            if self.home is None and self.config is None and self.backend is None \
                    and mode != "0":
                from .cache import seeded_app

                self._app = seeded_app()
                if mode == "debug" and self._app is not None:
                    sys.stderr.write("queuectl: start-up cache: seeded the App\n")
            if self._app is None:
                self._app = App(resolve_config(home=self.home, config=self.config,
                                               backend=self.backend))
        return self._app

    def child_global_args(self) -> list[str]:
        """Global options that make a child process see the same queue."""
        app = self.app()
        args = ["--home", str(app.config.home), "--backend", app.config.backend]
        if app.config.config_path is not None:
            args += ["--config", str(app.config.config_path)]
        return args

    def close(self) -> None:
        app = self._app
        if app is not None:
            if "plugins" in app.__dict__:  # what loading them found, for the next start
                from .cache import remember

                remember(app)
            app.close()


#: The group's options that a command also takes after its name, with the
#: same meaning: the group's parameter -> the State attribute it sets.
#: (--version and --help are actions, not settings: after a command, --help
#: is that command's.)
GLOBAL_OPTIONS = {"backend": "backend", "config_path": "config", "home": "home"}

# Original spellings kept as hidden aliases: name -> (group, subcommand).
ALIASES = {
    "worker-start": ("worker", "start"),
    "worker-stop": ("worker", "stop"),
    "dlq-list": ("dlq", "list"),
    "dlq-retry": ("dlq", "retry"),
    "config-get": ("config", "get"),
    "config-set": ("config", "set"),
}

# Other queues' command names (pueue, ts) -> the queuectl command line that
# does that, suggested by "No such command" rather than run as aliases: their
# flags and arguments differ from ours, so running ours would surprise.
OTHER_TOOLS = {
    "add": "queuectl enqueue -c",
    "log": "queuectl logs",
    "ls": "queuectl list",
    "kill": "queuectl cancel",
    "follow": "queuectl logs --follow",
    "rm": "queuectl purge",
    "clean": "queuectl purge",
    "remove": "queuectl purge",
    "start": "queuectl worker start",
    "stop": "queuectl worker stop",
}

COMMANDS = {
    "enqueue": ("queuectl_core.cli.jobs", "enqueue"),
    "status": ("queuectl_core.cli.jobs", "status"),
    "stats": ("queuectl_core.cli.stats", "stats"),
    "list": ("queuectl_core.cli.jobs", "list_cmd"),
    "show": ("queuectl_core.cli.history", "show"),
    "logs": ("queuectl_core.cli.logs", "logs"),
    "cancel": ("queuectl_core.cli.control", "cancel"),
    "wait": ("queuectl_core.cli.control", "wait"),
    "pause": ("queuectl_core.cli.control", "pause"),
    "resume": ("queuectl_core.cli.control", "resume"),
    "dlq": ("queuectl_core.cli.history", "dlq"),
    "purge": ("queuectl_core.cli.control", "purge"),
    "worker": ("queuectl_core.cli.workers", "worker"),
    "config": ("queuectl_core.cli.settings", "config"),
    "plugins": ("queuectl_core.cli.settings", "plugins_cmd"),
    "export": ("queuectl_core.cli.transfer", "export_cmd"),
    "import": ("queuectl_core.cli.transfer", "import_cmd"),
    "schema": ("queuectl_core.cli.schema", "schema_cmd"),
    "limit": ("queuectl_core.cli.limits", "limit"),
    "schedule": ("queuectl_core.cli.schedules", "schedule"),
}

SHORT_HELP = {
    "enqueue": "Add a job (JSON, flags, or a file of JSON lines).",
    "status": "Count jobs per state, active workers and paused queues.",
    "stats": "Throughput, errors, wait and run times per queue (--since 1h).",
    "list": "List jobs, optionally only those in one state or queue.",
    "show": "Show one job with every attempt.",
    "logs": "Print (or --follow) the output of a job's attempt.",
    "cancel": "Cancel jobs; a running job's command is stopped.",
    "wait": "Block until jobs finish; exit 0 if all completed.",
    "pause": "Stop workers from claiming jobs of a queue.",
    "resume": "Let workers claim jobs of a paused queue again.",
    "dlq": "Inspect, retry and purge jobs in the dead letter queue.",
    "purge": "Delete finished jobs (and their output), e.g. older than 7d.",
    "worker": "Start, run and stop worker processes.",
    "config": "Get and set runtime settings (shared by all workers).",
    "plugins": "List installed plugins and what they provide.",
    "export": "Write all jobs with their history as JSON lines.",
    "import": "Load jobs from 'export' output, all or nothing.",
    "schema": "Print the JSON Schema of a job or of the config file.",
    "limit": "Set how many jobs with one concurrency key run at once.",
    "schedule": "Recurring jobs (cron or intervals), each tick fired once.",
}


class LazyGroup(click.Group):
    """Loads a command's module only when that command runs."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in ALIASES:
            group_name, sub = ALIASES[cmd_name]
            group = self.get_command(ctx, group_name)
            assert isinstance(group, click.Group)
            return group.get_command(ctx, sub)
        if cmd_name not in COMMANDS:
            return plugin_command(ctx, cmd_name)
        import importlib

        module_name, attr = COMMANDS[cmd_name]
        command: click.Command = getattr(importlib.import_module(module_name), attr)
        return with_global_options(command)

    def resolve_command(self, ctx: click.Context, args: list[str]
                        ) -> tuple[str | None, click.Command | None, list[str]]:
        name = args[0]
        if not ctx.resilient_parsing and not name.startswith("-") \
                and self.get_command(ctx, name) is None:
            raise click.UsageError(no_such_command(name, plugin_commands(ctx)), ctx)
        return super().resolve_command(ctx, args)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, SHORT_HELP[name]) for name in COMMANDS]
        with formatter.section("Commands"):
            formatter.write_dl(rows)
        extra = plugin_commands(ctx)
        if extra:
            with formatter.section("Commands from plugins"):
                formatter.write_dl([(name, spec.description) for name, spec in extra.items()])
        with formatter.section("Aliases (the original spellings)"):
            formatter.write_dl([(a, f"queuectl {g} {s}") for a, (g, s) in ALIASES.items()])


def plugin_commands(ctx: click.Context) -> dict[str, CommandSpec]:
    """The commands plugins add (``queuectl_cli_commands``), by name; loaded
    only for a name that is not a core command (and for ``--help``), so
    ``enqueue`` and ``status`` never pay for them. Plugins that fail are
    named on stderr and left out."""
    from pathlib import Path

    from ..config import home_dir
    from ..errors import QueuectlError
    from ..plugins import build_plugins

    state = ctx.find_object(State)
    home = home_dir(state.home if state is not None else None)
    try:
        plugins = build_plugins(cache_dir=Path(home) / "cache")
        found = plugins.commands()
    except QueuectlError as exc:
        sys.stderr.write(f"Warning: {exc}\n")
        return {}
    return {name: spec for name, spec in sorted(found.items()) if name not in COMMANDS}


def plugin_command(ctx: click.Context, name: str) -> click.Command | None:
    """The plugin command called ``name``, built by its factory with the
    context of the home (``--home`` before the command), or None."""
    from ..config import home_dir
    from ..registry import PluginContext

    spec = plugin_commands(ctx).get(name)
    if spec is None:
        return None
    state = ctx.find_object(State)
    context = PluginContext(home_dir(state.home if state is not None else None))
    return with_global_options(spec.resolve_factory()(None, context.for_plugin(spec.name)))


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--backend", metavar="NAME", help="Storage backend (default: from config, "
              "else sqlite). Env: QUEUECTL_BACKEND.")
@click.option("--config", "config_path", metavar="PATH", help="YAML config file (default: "
              "$QUEUECTL_HOME/queuectl.yaml). Env: QUEUECTL_CONFIG.")
@click.option("--home", metavar="DIR", help="Directory for all state (default: "
              "~/.local/share/queuectl). Env: QUEUECTL_HOME.")
@click.version_option(__version__, "--version", prog_name="queuectl")
@click.pass_context
def cli(ctx: click.Context, backend: str | None, config_path: str | None,
        home: str | None) -> None:
    """queuectl: a background job queue for shell commands.

    Enqueue commands as jobs, start workers, and each job runs once, with
    retries (exponential backoff) and a dead letter queue for jobs that keep
    failing. Global options go before or after the command:

    \b
        queuectl --backend sqlite status
        queuectl status --backend sqlite
    """
    state = State(home, config_path, backend)
    ctx.obj = state
    ctx.call_on_close(state.close)


def no_such_command(name: str, more: Iterable[str] = ()) -> str:
    """click's "No such command" message, with what to type instead: the
    queuectl command line for another queue's command name, else the
    closest command name or alias (or of ``more``, the plugins' commands),
    if one is close."""
    message = f"No such command {name!r}."
    if name in OTHER_TOOLS:
        return f"{message} Did you mean {OTHER_TOOLS[name]!r}?"
    from difflib import get_close_matches

    close = get_close_matches(name, [*COMMANDS, *ALIASES, *more], n=3)
    # Two letters swapped is the commonest typo: 'stauts' is 'status', not 'stats'.
    swapped = [c for c in close if sorted(c) == sorted(name)]
    close = swapped or close
    return f"{message} Did you mean {close[0]!r}?" if close else message


def _global_option_after(ctx: click.Context, param: click.Parameter, value: str | None
                         ) -> None:
    """A global option given after the command: set it in the State as the
    group did (the group's callback ran first, so the later one wins)."""
    state = ctx.find_object(State)
    if value is not None and state is not None and param.name is not None:
        setattr(state, param.name, value)


def with_global_options(command: click.Command) -> click.Command:
    """``command`` (and, for a group, its subcommands) taking the global
    options after its name too, hidden from its help, unless it has an
    option of that name itself: then its own wins."""
    if getattr(command, "_queuectl_global_options", False):
        return command
    own = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
    for option in cli.params:
        if isinstance(option, click.Option) and option.name in GLOBAL_OPTIONS \
                and not own & set(option.opts):
            command.params.append(click.Option(
                [*option.opts, GLOBAL_OPTIONS[option.name]], metavar=option.metavar,
                hidden=True, expose_value=False, callback=_global_option_after))
    command._queuectl_global_options = True  # type: ignore[attr-defined]
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            with_global_options(sub)
    return command


def run_click(argv: list[str]) -> int:
    """Run the click CLI; click's own exceptions become exit codes here,
    the rest (QueuectlError, ...) in ``startup.guarded``."""
    try:
        rv = cli.main(args=argv, prog_name="queuectl", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        return 130
    return rv if isinstance(rv, int) else 0


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m queuectl_core.cli.main`` (how supervisors
    start their workers): the full CLI, with no start-up cache."""
    from .exits import guarded

    args = sys.argv[1:] if argv is None else argv
    sys.exit(guarded(lambda: run_click(args)))


def pass_state(f: Any) -> Any:
    return click.pass_obj(f)


if __name__ == "__main__":
    main()
