"""queuectl: a command-line background job queue for shell commands.

Plugin authors import :data:`hookimpl` from here to mark their hook
implementations; everything else lives in the submodules. pluggy is
imported on first use of ``hookimpl``, so that commands that load no
plugin (``--help``) do not pay for it.
"""

from __future__ import annotations

# Not typing.TYPE_CHECKING: importing typing would cost every CLI call more
# than the CLI's hot path can afford (mypy treats this name the same way).
TYPE_CHECKING = False

__version__ = "0.1.0"

#: The single project namespace: hook markers, the entry-point group and the
#: plugin manager are all called ``queuectl``.
PROJECT_NAME = "queuectl"

if TYPE_CHECKING:
    import pluggy

    hookimpl: pluggy.HookimplMarker


def __getattr__(name: str) -> object:
    if name == "hookimpl":
        import pluggy

        marker = pluggy.HookimplMarker(PROJECT_NAME)
        globals()["hookimpl"] = marker
        return marker
    raise AttributeError(name)


__all__ = ["PROJECT_NAME", "__version__", "hookimpl"]
