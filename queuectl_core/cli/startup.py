"""The ``queuectl`` entry point: the start-up cache's calls, else click.

Scripts call ``queuectl enqueue JSON`` (or ``-c CMD``) and ``queuectl
status`` in loops,
where importing click, pluggy and every plugin would cost more than the
work. For those two calls this module skips click and pluggy: it reads
the start-up cache (``cache.py``), what the full CLI learnt the last time
it loaded the plugins (the selected backend's factory, the YAML
``defaults``, whether any plugin listens to job events), builds an
:class:`~queuectl_core.app.App` seeded with it, and calls the same command
code as the click commands (``queuectl_core.commands``): the same
validation, the same output, the same errors. An App so seeded builds
anything else it is asked for (plugins, options) the usual way.

The cache is used only while it matches: the same Python and installed
distributions (every ``sys.path`` directory's modification time), the same
``QUEUECTL_DISABLE_PLUGINS``, the same config file (path and whole text), the
same backend choice. A backend given options in the YAML takes the cached
call only if its factory accepts them as an ``OptionsSnapshot`` (the
validated values, remembered with the config text; ``snapshot_options`` in
its record): their pydantic model would cost more than the call. A stale or
damaged cache costs time, never correctness. ``QUEUECTL_STARTUP_CACHE=0``
turns it off.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable


def main() -> None:
    """Console-script entry point: one line on stderr for any error."""
    from .exits import guarded

    sys.exit(guarded(lambda: dispatch(sys.argv[1:])))


def dispatch(argv: list[str]) -> int:
    mode = os.environ.get("QUEUECTL_STARTUP_CACHE", "1")
    hot, why = (None, "turned off") if mode == "0" else hot_call(argv)
    if mode == "debug":  # for tests: say which way the call went
        sys.stderr.write(f"queuectl: start-up cache: {'used' if hot else 'not used: ' + why}\n")
    if hot is not None:
        try:
            hot()
        finally:
            if mode == "debug":
                heavy = sorted({"click", "pluggy", "pydantic", "yaml"} & set(sys.modules))
                sys.stderr.write(f"queuectl: start-up cache: loaded {heavy}\n")
        return 0
    from .main import run_click

    return run_click(argv)


# ------------------------------------------------------------------ hot calls

def _command_option(rest: list[str]) -> str | None:
    """Take ``-c CMD``, ``--command CMD`` or ``--command=CMD`` out of
    ``rest``, as click reads it (the word after ``-c`` is the command,
    whatever it looks like); None if it is not there exactly once."""
    found: list[tuple[int, int, str]] = []
    i = 0
    while i < len(rest):
        arg = rest[i]
        if arg in ("-c", "--command") and i + 1 < len(rest):
            found.append((i, 2, rest[i + 1]))
            i += 2
            continue
        if arg.startswith("--command="):
            found.append((i, 1, arg[len("--command="):]))
        i += 1
    if len(found) != 1:
        return None
    at, width, command = found[0]
    del rest[at:at + width]
    return command


def hot_call(argv: list[str]) -> tuple[Callable[[], None] | None, str]:
    """The call for ``argv`` if it is ``enqueue JSON [--json]``, ``enqueue
    -c CMD [--json]`` or ``status [--json]`` and the cache holds; else None
    (the full CLI) and why not."""
    if not argv or argv[0] not in ("enqueue", "status"):
        return None, "not enqueue or status"
    rest = argv[1:]
    command = _command_option(rest) if argv[0] == "enqueue" else None
    as_json = rest.count("--json") == 1
    if as_json:
        rest.remove("--json")
    # Any other option, the global ones after the command (--home, --backend,
    # --config) included, takes the full CLI: never this home's cache.
    if "--json" in rest or any(arg.startswith("-") for arg in rest):
        return None, "options"
    if (argv[0] == "status" and rest) or (argv[0] == "enqueue"
                                          and len(rest) != (command is None)):
        return None, "arguments"
    from .cache import seeded_app

    app = seeded_app()
    if app is None:
        return None, "no cache for this home, environment and config file"
    from .. import commands

    def call() -> None:
        try:
            if argv[0] == "status":
                commands.status(app, None, as_json=as_json)
            else:
                specs = (commands.spec_from_json(rest[0]) if command is None
                         else commands.spec_from_command(command))
                commands.enqueue(app, specs, as_json=as_json)
        finally:
            app.close()

    return call, ""
