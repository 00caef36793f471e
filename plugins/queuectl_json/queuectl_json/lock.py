"""The store's lock: ``flock(2)`` on the file ``lock``, shared to read and
exclusive to change, waited for up to a timeout."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path

from queuectl_core.errors import StorageError

LOCK = "lock"


class StoreLock:
    def __init__(self, directory: Path, timeout: float) -> None:
        self.directory = directory
        self.path = directory / LOCK
        self.timeout = timeout
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        self._pid = os.getpid()

    def acquire(self, exclusive: bool) -> None:
        if os.getpid() != self._pid:
            # A forked child shares the parent's open file description, and
            # flock would not keep the two apart: take our own.
            inherited = self._fd
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            self._pid = os.getpid()
            with contextlib.suppress(OSError):
                os.close(inherited)
        mode = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB
        deadline = time.monotonic() + self.timeout
        delay = 0.0002
        while True:
            try:
                fcntl.flock(self._fd, mode)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise StorageError(
                        f"JSON store {self.directory} is busy: another process held its lock "
                        f"for more than {self.timeout:g}s") from None
                time.sleep(delay)
                delay = min(delay * 2, 0.004)

    def release(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)
