"""Telling a damaged database file (or a full disk) from any other error.

A file that held a queue is marked (``<db>-created``, :func:`write_marker`),
so that the file emptied or removed is refused, not taken for a new queue.

SQLite reports a damaged page as ``sqlite3.DatabaseError: database disk
image is malformed`` (SQLITE_CORRUPT, or SQLITE_NOTADB for a file that is
not a database), from whichever statement first reads it. Every statement
of the store goes through :class:`Connection`, which turns that into
:class:`~queuectl_core.errors.StoreDamagedError` naming the file: a
command says so in one line, and a worker stops its whole group instead of
crash-looping.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3

from queuectl_core.errors import StoreDamagedError

# typing is not imported at run time (the CLI's hot path).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

#: SQLITE_CORRUPT, SQLITE_NOTADB.
_DAMAGED_CODES = (11, 26)


def is_damage(exc: sqlite3.Error) -> bool:
    return isinstance(exc, sqlite3.DatabaseError) and (
        getattr(exc, "sqlite_errorcode", None) in _DAMAGED_CODES
        or "malformed" in str(exc) or "not a database" in str(exc))


def is_disk_full(exc: sqlite3.Error) -> bool:
    """SQLITE_FULL: "database or disk is full"."""
    return getattr(exc, "sqlite_errorcode", None) == 13 or "is full" in str(exc)  # SQLITE_FULL


def write_marker(marker: str, db: str | os.PathLike[str]) -> None:
    """Record that ``db`` holds a queue (best effort: a store that cannot
    write it still works, unprotected)."""
    with contextlib.suppress(OSError):
        fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(f"queuectl: {os.path.basename(db)} holds a queue; should it ever be "
                     "empty or missing, it was damaged and queuectl refuses to use it\n")


def damaged(path: object, exc: sqlite3.Error) -> StoreDamagedError:
    return StoreDamagedError(
        f"SQLite database {path} is damaged ({exc}): stop the workers, move it aside and "
        f"restore a backup ('sqlite3 {path} .recover' may save what is left); queuectl "
        "never overwrites it")


class Connection(sqlite3.Connection):
    """A connection whose statements report a damaged file as such."""

    path: str = "?"

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        try:
            return super().execute(sql, parameters)
        except sqlite3.DatabaseError as exc:
            if is_damage(exc):
                raise damaged(self.path, exc) from None
            raise

    def executemany(self, sql: str, parameters: Any, /) -> sqlite3.Cursor:
        try:
            return super().executemany(sql, parameters)
        except sqlite3.DatabaseError as exc:
            if is_damage(exc):
                raise damaged(self.path, exc) from None
            raise
