"""What the installed distributions (and so the plugins) depend on, as a key
for the caches that remember what loading them found (``plugins.py``'s list
of entry points, the CLI's start-up cache). Standard library only."""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_VERSION = 2


def environment_key() -> list[Any]:
    """Python's version, ``QUEUECTL_DISABLE_PLUGINS``, and every directory on
    sys.path with its modification time (installing, upgrading or removing
    a distribution changes it). ``sys.path[0]`` (the script's directory, or
    the working directory under ``python -m``) is left out: it differs
    between the CLI and its workers, and installed distributions are not
    there."""
    key: list[Any] = [_VERSION, sys.version, os.environ.get("QUEUECTL_DISABLE_PLUGINS", "")]
    for entry in sys.path if sys.flags.safe_path else sys.path[1:]:
        try:
            key.append([entry, os.stat(entry or ".").st_mtime_ns])
        except OSError:
            key.append([entry, None])
    return key
