"""Signals held from a commit until its result is printed.

``enqueue`` stores the jobs (the commit point is inside the store), then the
store may tidy up (the JSON store compacts its journal), then the command
says what it stored. A SIGINT or SIGTERM in between would end it with exit
130 or 143 while the jobs are stored, and a retry without ids would enqueue
them twice. So the command holds SIGINT, SIGTERM and SIGHUP from just
before the store is called until its message is written out: a signal that
came meanwhile is then taken (and named on stderr), and the command exits
as it succeeded. Parsing and checking the input stay interruptible.

Uses the C module ``_signal``: ``signal`` would cost 1 ms on the hot path.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal as _signal
    from types import TracebackType
else:
    import _signal

_NAMES = {getattr(_signal, name): name for name in ("SIGINT", "SIGTERM", "SIGHUP")}


class HeldSignals:
    """``with HeldSignals(): commit; print`` (see the module's docstring).
    Only in the main thread (elsewhere, and where the calls are missing,
    nothing is held)."""

    def __init__(self) -> None:
        self._old: set[int] | None = None
        #: The signals that came while held, by name.
        self.came: list[str] = []

    def __enter__(self) -> HeldSignals:
        try:
            self._old = set(_signal.pthread_sigmask(_signal.SIG_BLOCK, _NAMES))
        except (AttributeError, OSError, ValueError):
            self._old = None
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._old is None:
            return
        try:
            sys.stdout.flush()  # the message is out before any later signal may end us
            if kind is None:  # committed and said so: take what came meanwhile
                pending = (_signal.sigpending() & _NAMES.keys()) - self._old
                for signum in sorted(pending):
                    if _signal.sigtimedwait([signum], 0) is not None:
                        self.came.append(_NAMES[signum])
        finally:
            _signal.pthread_sigmask(_signal.SIG_SETMASK, self._old)
        if self.came:
            sys.stderr.write(f"Note: {' and '.join(self.came)} came after the jobs were "
                             "stored: they are enqueued, and the signal was ignored\n")
