"""Stop requests: SIGTERM and SIGINT, counted, and a sleep they cut short."""

from __future__ import annotations

import contextlib
import os
import select
import signal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..ledger import Ledger
    from ..wakeup import WakeupListener


class StopSignal:
    """Counts SIGTERM/SIGINT: the first asks for a graceful stop (finish the
    current job), the second for a forced one (kill it, release its claim).
    Signals also wake an idle sleep through a self-pipe."""

    def __init__(self) -> None:
        self.count = 0
        #: A graceful stop asked for without a signal (a lost supervisor):
        #: the next signal still only asks to finish, the one after forces.
        self.finishing = False
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)
        signal.set_wakeup_fd(self._w, warn_on_full_buffer=False)

    def _handle(self, signum: int, frame: object) -> None:
        self.count += 1

    def request(self) -> None:
        """Count a stop signal, as if one arrived."""
        self.count += 1
        self._poke()

    def finish_up(self) -> None:
        """Stop gracefully without counting a signal: what a worker whose
        supervisor is gone does, so that ``worker stop``'s SIGTERM is still
        a first signal (finish the job), not a second (kill it)."""
        self.finishing = True
        self._poke()

    def _poke(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.write(self._w, b"\0")

    @property
    def graceful(self) -> bool:
        return self.finishing or self.count >= 1

    @property
    def forced(self) -> bool:
        return self.count >= 2

    def sleep(self, seconds: float, wakeup: WakeupListener | None = None,
              store: Ledger | None = None) -> None:
        """Sleep up to ``seconds``; return early on a signal, a local
        wake-up, or news from the storage backend (e.g. LISTEN/NOTIFY)."""
        # A signal writes to the pipe (set_wakeup_fd), so one that arrives
        # just before select still ends the sleep at once.
        if seconds > 0:
            fds: list[int] = [self._r]
            if wakeup is not None:
                fds.append(wakeup.fileno())
            store_fd = None
            if store is not None:
                with contextlib.suppress(Exception):
                    store_fd = store.wakeup_fileno()
            if store_fd is not None:
                fds.append(store_fd)
            with contextlib.suppress(InterruptedError, OSError, ValueError):
                select.select(fds, [], [], seconds)
        with contextlib.suppress(BlockingIOError):
            while os.read(self._r, 512):
                pass
        if wakeup is not None:
            wakeup.drain()
        if store is not None:
            with contextlib.suppress(Exception):
                store.drain_wakeups()
