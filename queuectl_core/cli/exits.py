"""How a ``queuectl`` call ends: an exit code, and one line on stderr for
anything that went wrong (the start-up cache's calls and click's alike)."""

from __future__ import annotations

import os
import sys

from ..errors import QueuectlError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable


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
