"""queuectl: a command-line background job queue for shell commands.

Plugin authors import :data:`hookimpl` from here to mark their hook
implementations; everything else lives in the submodules.
"""

from __future__ import annotations

import pluggy

__version__ = "0.1.0"

#: The single project namespace: hook markers, the entry-point group and the
#: plugin manager are all called ``queuectl``.
PROJECT_NAME = "queuectl"

hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

__all__ = ["PROJECT_NAME", "__version__", "hookimpl"]
