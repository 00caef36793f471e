"""The ``queuectl`` entry point, and its start-up cache.

Scripts call ``queuectl enqueue JSON`` and ``queuectl status`` in loops,
where importing click, pluggy and every plugin would cost more than the
work. For those two calls this module skips click and pluggy: it reads
``$QUEUECTL_HOME/cache/startup.json``, what the full CLI learnt the last
time it loaded the plugins (the selected backend's factory, the YAML
``defaults``, whether any plugin listens to job events), builds an
:class:`~queuectl_core.app.App` seeded with it, and calls the same command
code as the click commands (``queuectl_core.commands``): the same
validation, the same output, the same errors. An App so seeded builds
anything else it is asked for (plugins, options) the usual way.

The cache is used only while it matches: the same Python and installed
distributions (every ``sys.path`` directory's modification time), the same
``QUEUECTL_DISABLE_PLUGINS``, the same config file (path and whole text), the
same backend choice, and a backend without YAML options (their pydantic
model would cost more than the call). A stale or damaged cache costs time,
never correctness. ``QUEUECTL_STARTUP_CACHE=0`` turns it off.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys

from ..errors import QueuectlError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path
    from typing import Any

    from ..app import App

CACHE_FILE = "startup.json"


def main() -> None:
    """Console-script entry point: one line on stderr for any error."""
    sys.exit(guarded(lambda: dispatch(sys.argv[1:])))


def dispatch(argv: list[str]) -> int:
    hot = None
    if os.environ.get("QUEUECTL_STARTUP_CACHE", "1") != "0":
        hot = hot_call(argv)
    if hot is not None:
        hot()
        return 0
    from .main import run_click

    return run_click(argv)


def guarded(call: Callable[[], int]) -> int:
    """Run a command; map what escapes it to an exit code and one line."""
    try:
        return call()
    except QueuectlError as exc:
        sys.stderr.write(f"Error: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # Output piped into `head` and the like: not an error.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except Exception as exc:
        if os.environ.get("QUEUECTL_DEBUG"):
            raise
        sys.stderr.write(f"Error: internal error: {type(exc).__name__}: {exc} "
                         "(set QUEUECTL_DEBUG=1 for a traceback)\n")
        return 1


# ------------------------------------------------------------------ hot calls

def hot_call(argv: list[str]) -> Callable[[], None] | None:
    """The call for ``argv`` if it is ``enqueue JSON [--json]`` or
    ``status [--json]`` and the cache holds; else None (the full CLI)."""
    if not argv or argv[0] not in ("enqueue", "status"):
        return None
    rest = argv[1:]
    as_json = rest.count("--json") == 1
    if as_json:
        rest.remove("--json")
    if "--json" in rest or any(arg.startswith("-") for arg in rest):
        return None
    if argv[0] == "status" and rest:
        return None
    if argv[0] == "enqueue" and len(rest) != 1:
        return None
    app = seeded_app()
    if app is None:
        return None
    from .. import commands

    def call() -> None:
        try:
            if argv[0] == "status":
                commands.status(app, None, as_json=as_json)
            else:
                commands.enqueue(app, commands.spec_from_json(rest[0]), as_json=as_json)
        finally:
            app.close()

    return call


def seeded_app() -> App | None:
    """An App seeded from the cache of the current home, or None."""
    from ..config import AppConfig, config_path_for, home_path
    from ..errors import ConfigError
    from ..limits import DEFAULT_BACKEND

    home = home_path(None)
    cache = load(home)
    if cache is None:
        return None
    try:
        config_path = config_path_for(home, None)
    except ConfigError:
        return None  # the full CLI reports it
    text = None
    if config_path is not None:
        try:
            text = config_path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return None
    if [str(config_path) if config_path else None, text] != cache.get("config"):
        return None
    backend = os.environ.get("QUEUECTL_BACKEND") or cache.get("file_backend") or DEFAULT_BACKEND
    if backend != cache.get("backend") or not isinstance(cache.get("factory"), str):
        return None
    from ..app import App
    from ..registry import BackendSpec

    spec = BackendSpec(name=backend, factory=cache["factory"],
                       distribution=cache.get("distribution"))
    config = AppConfig(home=home, config_path=config_path, backend=backend, text=text,
                       defaults=dict(cache.get("defaults") or {}))
    return App(config, backend=spec, listeners=bool(cache.get("listeners")))


# ------------------------------------------------------------------ the cache

def cache_path(home: Path | str) -> str:
    return os.path.join(home, "cache", CACHE_FILE)


def load(home: Path | str) -> dict[str, Any] | None:
    """The cache of ``home`` if it is valid in this environment, else None."""
    try:
        with open(cache_path(home), encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    from ..installed import environment_key

    if not isinstance(data, dict) or data.get("key") != environment_key():
        return None
    return data


def remember(app: App) -> None:
    """Record what the cache holds, after a command of the full CLI loaded
    the plugins with ``app``. Never raises: a cache that cannot be written
    only costs time."""
    with contextlib.suppress(Exception):
        _remember(app)


def _remember(app: App) -> None:
    from ..installed import environment_key

    config = app.config
    file = config.file
    spec = app.backend
    factory = spec.factory_path()
    if config.backend_options(spec.name):
        factory = None  # options need their pydantic model: the full CLI
    data = {
        "key": environment_key(),
        "config": [None if config.config_path is None else str(config.config_path),
                   config.text if config.config_path is not None else None],
        "file_backend": file.backend if file is not None else None,
        "backend": config.backend,
        "factory": factory,
        "distribution": spec.distribution,
        "defaults": config.defaults,
        "listeners": app.plugins.has_event_listeners(),
    }
    path = cache_path(config.home)
    encoded = json.dumps(data, ensure_ascii=False, sort_keys=True)
    try:
        with open(path, encoding="utf-8") as fh:
            if fh.read() == encoded:
                return
    except OSError:
        pass
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(encoded)
    os.replace(tmp, path)
