"""Tests that restart the PostgreSQL server, and every other test that uses it.

A few tests restart the local server (``pg_ctlcluster ... restart``). Under
pytest-xdist, or with two test runs on one machine, any other test using the
server at that moment would fail for no fault of its own. So every test that
talks to PostgreSQL holds :func:`postgres_shared` while it runs (from before
its first connection until its schemas are dropped), and a test that
restarts the server holds :func:`postgres_exclusive` instead: it starts once
no other test uses the server, and none starts until it has finished.

The locks are ``flock`` locks on two files in the temporary directory, named
after the DSN, so that they are shared by every process (xdist workers, other
pytest runs) testing against the same server:

- ``*.lock``: held shared by each test using the server, exclusive by a restart;
- ``*.gate``: taken briefly by each test before its shared lock, and held by a
  restart from the moment it has waited long enough for a natural gap; from
  then on no new test enters, so the restart cannot be starved.

Within one process the locks are re-entrant (a fixture may take the shared
lock while the test's queue already holds it).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

#: Give up (and fail the test) after this long: something holds the lock
#: that should not (a hung test of another run?).
ACQUIRE_TIMEOUT_S = 1800.0
#: How long a restart waits for a moment without other PostgreSQL tests
#: before it closes the gate to new ones (other workers then idle until the
#: tests in progress and the restart are done).
GAP_WAIT_S = 20.0
_POLL_S = 0.02

_held: list[str] = []  # "shared" or "exclusive", one entry per nested hold


def _path(dsn: str, suffix: str) -> Path:
    key = hashlib.sha256(dsn.encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"queuectl-tests-postgres-{key}.{suffix}"


def _open(dsn: str, suffix: str) -> int:
    return os.open(_path(dsn, suffix), os.O_RDONLY | os.O_CREAT, 0o666)


def _release(fd: int) -> None:
    with contextlib.suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def _try(fd: int, operation: int) -> bool:
    try:
        fcntl.flock(fd, operation | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _acquire(fd: int, operation: int, deadline: float, what: str) -> None:
    while not _try(fd, operation):
        if time.monotonic() >= deadline:
            raise TimeoutError(f"waited {ACQUIRE_TIMEOUT_S:g} s for the PostgreSQL test lock "
                               f"({what}); is a test of another run hanging?")
        time.sleep(_POLL_S)


@contextlib.contextmanager
def postgres_shared(dsn: str) -> Iterator[None]:
    """Hold while using the server at ``dsn``: no restart happens meanwhile."""
    if _held:
        _held.append("shared")
        try:
            yield
        finally:
            _held.pop()
        return
    deadline = time.monotonic() + ACQUIRE_TIMEOUT_S
    gate = _open(dsn, "gate")
    try:
        _acquire(gate, fcntl.LOCK_EX, deadline, "gate")
        lock = _open(dsn, "lock")
        try:
            _acquire(lock, fcntl.LOCK_SH, deadline, "shared")
        except BaseException:
            _release(lock)
            raise
    finally:
        _release(gate)
    _held.append("shared")
    try:
        yield
    finally:
        _held.pop()
        _release(lock)


@contextlib.contextmanager
def postgres_exclusive(dsn: str) -> Iterator[None]:
    """Hold while restarting the server at ``dsn``: no other test uses it."""
    if _held:
        raise RuntimeError("postgres_exclusive inside postgres_shared would wait for itself")
    deadline = time.monotonic() + ACQUIRE_TIMEOUT_S
    gate = _open(dsn, "gate")
    lock = _open(dsn, "lock")
    try:
        # First hope for a moment when no other test uses the server...
        gap_deadline = time.monotonic() + GAP_WAIT_S
        while not _try(lock, fcntl.LOCK_EX):
            if time.monotonic() >= gap_deadline:
                # ...then stop new ones and wait for those in progress.
                _acquire(gate, fcntl.LOCK_EX, deadline, "gate")
                _acquire(lock, fcntl.LOCK_EX, deadline, "exclusive")
                break
            time.sleep(_POLL_S)
    except BaseException:
        _release(lock)
        _release(gate)
        raise
    _held.append("exclusive")
    try:
        yield
    finally:
        _held.pop()
        _release(lock)
        _release(gate)
