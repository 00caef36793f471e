"""What the CLI's fast path may take as known without loading any plugin.

``queuectl enqueue JSON`` and ``queuectl status`` are called in shell loops,
where importing click, pluggy and every plugin costs more than the work
itself. ``cli/fast.py`` handles those calls with the standard library, the
light validation in ``jobspec`` and a backend's light opener (the
``fast_path`` of its BackendSpec), using what the full CLI learnt the last
time it ran, stored in ``$QUEUECTL_HOME/cache/fastpath.json``:

* the environment it is valid for: Python version, every ``sys.path``
  directory with its modification time (installing, upgrading or removing a
  distribution changes it), and ``QUEUECTL_DISABLE_PLUGINS``;
* the configuration file it read, by path and whole text (no mtime games);
* the backend that file and the environment selected, its ``fast_path``
  opener and its validated options;
* the YAML ``defaults`` (runtime settings) and whether any plugin listens to
  job events (then ``enqueue`` stays on the full path, which announces the
  new job).

The full ``enqueue`` and ``status`` rewrite the file whenever what they see
differs from it. When anything does not match, the fast path declines and
the full command runs, so a stale or damaged cache costs time, never
correctness. This module is imported by the fast path: standard library
only, no typing at run time.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .app import App

CACHE_FILE = "fastpath.json"
_VERSION = 1


def environment_key() -> list[Any]:
    """What installed distributions (and so plugins) depend on: every
    directory on sys.path and its modification time. ``sys.path[0]`` (the
    script's directory, or the working directory under ``python -m``) is
    left out: it differs between the CLI and its workers, and the working
    directory changes all the time; installed distributions are not there."""
    key: list[Any] = [_VERSION, sys.version]
    for entry in sys.path if sys.flags.safe_path else sys.path[1:]:
        try:
            key.append([entry, os.stat(entry or ".").st_mtime_ns])
        except OSError:
            key.append([entry, None])
    return key


def _disabled_plugins() -> str:
    return os.environ.get("QUEUECTL_DISABLE_PLUGINS", "")


def cache_path(home: str) -> str:
    return os.path.join(home, "cache", CACHE_FILE)


def load(home: str) -> dict[str, Any] | None:
    """The cache of ``home`` if it is valid in this environment, else None."""
    try:
        with open(cache_path(home), encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    if (not isinstance(data, dict) or data.get("key") != environment_key()
            or data.get("disabled_plugins") != _disabled_plugins()):
        return None
    return data


def remember(app: App) -> None:
    """Record what the fast path needs, after a full ``enqueue`` or
    ``status`` succeeded with ``app``. Never raises: a cache that cannot be
    written only costs time."""
    with contextlib.suppress(Exception):
        _remember(app)


def _remember(app: App) -> None:
    from .app import validated_options

    config = app.config
    spec = app.plugins.backend(config.backend)
    options = validated_options(spec, config.backend_options(spec.name),
                                f"backend {spec.name!r}", config)
    data = {
        "key": environment_key(),
        "disabled_plugins": _disabled_plugins(),
        "config_path": None if config.config_path is None else str(config.config_path),
        "config_text": config.file.text,
        "file_backend": config.file.backend,
        "backend": config.backend,
        "fast_path": spec.fast_path,
        "options": None if options is None else options.model_dump(mode="json"),
        "defaults": config.file.defaults,
        "job_event_listeners": bool(
            app.plugins.pm.hook.queuectl_job_event.get_hookimpls()),
    }
    home = str(config.home)
    path = cache_path(home)
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
