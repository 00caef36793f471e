"""``snapshot.json`` and ``journal-<G>.jsonl``: reading them (a new snapshot
is recognised by its inode, new journal lines are read from the offset this
process last reached), appending a line (the commit point of every change),
cutting off a torn last line, and writing a new snapshot.

Callers hold the store's lock: shared to read, exclusive to append, cut or
write a snapshot.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from pathlib import Path
from typing import Any

from queuectl_core.errors import StorageError

from .files import Files, damaged, dumps, fsync_dir, loads, pread_all, read_all, write_all
from .records import Damaged, Record
from .state import State

log = logging.getLogger(__name__)

SNAPSHOT = "snapshot.json"
JOURNAL_PREFIX = "journal-"
JOURNAL_SUFFIX = ".jsonl"


def journal_header(generation: int) -> bytes:
    """A journal's first line, written with it before its snapshot: a
    transaction with no operations (readers of any version skip it), so that
    an emptied journal is told from one nobody wrote to yet."""
    return dumps({"ops": [], "journal": generation}) + b"\n"


def journal_generation(name: str) -> int | None:
    """The generation of a journal file, from its name (None: not one)."""
    if name.startswith(JOURNAL_PREFIX) and name.endswith(JOURNAL_SUFFIX):
        number = name[len(JOURNAL_PREFIX):-len(JOURNAL_SUFFIX)]
        if number.isdigit():
            return int(number)
    return None


class Journal:
    """What this process has read of the snapshot and its journal, and the
    state they make."""

    def __init__(self, directory: Path, files: Files) -> None:
        self.directory = directory
        self.files = files
        self.snapshot_path = directory / SNAPSHOT
        self.state = State()
        # The snapshot read is kept open, so that its inode cannot be reused
        # while we compare against it.
        self._snap_fd: int | None = None
        self._snap_key: tuple[int, int, int, int] | None = None
        self.snap_size = 0
        self._journal_fd: int | None = None
        #: Bytes of the journal read (and applied) so far.
        self.offset = 0
        self._lines = 0

    @property
    def generation(self) -> int:
        return self.state.generation

    @property
    def position(self) -> tuple[Any, ...]:
        """Changes whenever the state may have changed (a new snapshot, new
        journal lines): what caches of derived data are keyed by."""
        return (self._snap_key, self.offset)

    def path(self, generation: int) -> Path:
        return self.directory / f"{JOURNAL_PREFIX}{generation}{JOURNAL_SUFFIX}"

    def invalidate(self) -> None:
        """Forget what was read: the next refresh reloads everything."""
        self._snap_key = None

    def close(self) -> None:
        for fd in (self._snap_fd, self._journal_fd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._snap_fd = self._journal_fd = None

    # ---------------------------------------------------------- reading
    def refresh(self, exclusive: bool) -> None:
        """Catch up with what other processes committed."""
        try:
            st = os.stat(self.snapshot_path)
        except FileNotFoundError:
            self.invalidate()
            raise StorageError(
                f"JSON store {self.directory}: {SNAPSHOT} is missing. Restore it from a "
                "backup; queuectl will not start an empty queue over the old one") from None
        if (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) != self._snap_key:
            self._load_snapshot()
        self._read_journal(exclusive)

    def _load_snapshot(self) -> None:
        path = self.snapshot_path
        fd = os.open(path, os.O_RDONLY)
        try:
            st = os.fstat(fd)
            state = State.from_snapshot(loads(read_all(fd)))
            self._check_no_newer_journal(state.generation)
        except Damaged as exc:
            os.close(fd)
            self.invalidate()
            raise damaged(path, str(exc)) from None
        except BaseException:
            os.close(fd)
            raise
        self.state = state
        self._adopt(fd, st)

    def _adopt(self, fd: int, st: os.stat_result) -> None:
        """From now on, compare against this snapshot and read its journal."""
        if self._snap_fd is not None:
            os.close(self._snap_fd)
        if self._journal_fd is not None:
            os.close(self._journal_fd)
        self._snap_fd, self._journal_fd = fd, None
        self._snap_key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        self.snap_size = st.st_size
        self.offset = self._lines = 0

    def _check_no_newer_journal(self, generation: int) -> None:
        for entry in os.scandir(self.directory):
            number = journal_generation(entry.name)
            if number is not None and number > generation and self._has_changes(entry.path):
                raise Damaged(
                    f"its generation {generation} is older than journal {entry.name}: was "
                    f"{SNAPSHOT} restored from an old backup? Restore the matching snapshot")

    def _read_journal(self, exclusive: bool) -> None:
        """Apply the journal lines written since this process last looked."""
        path = self.path(self.generation)
        if self._journal_fd is None:
            try:
                self._journal_fd = os.open(path, os.O_RDWR | os.O_APPEND)
            except FileNotFoundError:
                if self.state.journal_kept:
                    self.invalidate()
                    raise damaged(path, f"it is missing, while {SNAPSHOT} (generation "
                                  f"{self.generation}) was written after it; every change "
                                  "since that snapshot would be lost") from None
                return  # nothing written since the (older format's) snapshot
        fd = self._journal_fd
        size = os.fstat(fd).st_size
        offset = self.offset
        if size == 0 and self.state.journal_kept:
            self.invalidate()
            raise damaged(path, "it is empty (0 bytes), while it was written with its first "
                          "line before the snapshot; every change since the snapshot would "
                          "be lost")
        if size == offset:
            return
        if size < offset:
            self.invalidate()
            raise damaged(path, f"it is shorter ({size} bytes) than what was already "
                          f"read from it ({offset} bytes); it was truncated")
        data = pread_all(fd, size - offset, offset)
        end = data.rfind(b"\n") + 1
        try:
            for line in data[:end].splitlines():
                self._lines += 1
                tx = loads(line)
                if not isinstance(tx, dict) or not isinstance(tx.get("ops"), list):
                    raise Damaged("a journal line must be an object with an 'ops' list")
                for op in tx["ops"]:
                    self.state.apply(op, check=True)
        except Damaged as exc:
            self.invalidate()
            raise damaged(path, str(exc), self._lines) from None
        self.offset = offset + end
        if end < len(data) and exclusive:
            self._drop_torn_tail(path, data[end:])

    def _drop_torn_tail(self, path: Path, tail: bytes) -> None:
        """A last line without its newline was never acknowledged: its
        writer died while appending it (every append happens under the
        exclusive lock, which we now hold). Keep its bytes in a side file
        and cut it off, so that the next line starts on a line of its own."""
        assert self._journal_fd is not None
        keep = path.with_name(f"{path.name}.torn-{self.offset}-{secrets.token_hex(4)}")
        log.warning("%s: ignoring an unfinished last line (%d bytes) left by a process that "
                    "died while writing it; its bytes are kept in %s", path, len(tail), keep)
        fd = os.open(keep, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            write_all(fd, tail)
            if self.files.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.ftruncate(self._journal_fd, self.offset)
        if self.files.fsync:
            os.fsync(self._journal_fd)
            fsync_dir(self.directory)

    # ---------------------------------------------------------- writing
    def append(self, ops: list[Record]) -> None:
        """Append one journal line (the commit point), then apply it here.
        Under the exclusive lock, with the state up to date."""
        line = dumps({"ops": ops}) + b"\n"
        if self._journal_fd is None:
            self._journal_fd = os.open(self.path(self.generation),
                                       os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
            if self.files.fsync:
                fsync_dir(self.directory)
        fd = self._journal_fd
        start = self.offset
        try:
            write_all(fd, line)
            if self.files.fsync:
                os.fdatasync(fd)
        except BaseException:
            # Not acknowledged: take it back so that nobody applies it.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, start)
            self.invalidate()
            raise
        self.offset = start + len(line)
        self._lines += 1
        try:
            for op in ops:
                self.state.apply(op, check=False)
        except BaseException:
            self.invalidate()
            raise

    def write_snapshot(self, generation: int) -> None:
        """Write the state as snapshot ``generation`` (atomically: the commit
        point of a compaction) and read on from it; its journal is created
        first, with only its header line (a leftover of a compaction that
        died before its snapshot holds no change: it is written over)."""
        header = journal_header(generation)
        fd = os.open(self.path(generation), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            write_all(fd, header)
            if self.files.fsync:
                os.fdatasync(fd)
                fsync_dir(self.directory)
        finally:
            os.close(fd)
        self.files.atomic_write(self.snapshot_path, self.state.snapshot_bytes(generation))
        self.state.written(generation)
        # The state in memory is what was just written: only adopt the file,
        # its journal read up to the end of its header.
        fd = os.open(self.snapshot_path, os.O_RDONLY)
        self._adopt(fd, os.fstat(fd))
        self.offset, self._lines = len(header), 1

    def remove_older_journals(self) -> None:
        """Remove journals of earlier generations (a compaction's leftovers)."""
        for entry in os.scandir(self.directory):
            number = journal_generation(entry.name)
            if number is not None and number < self.generation:
                os.unlink(entry.path)

    def has_journals(self) -> bool:
        """Does a journal hold a change (more than its header line)?"""
        return any(p.name.startswith(JOURNAL_PREFIX) and self._has_changes(p)
                   for p in self.directory.iterdir())

    @staticmethod
    def _has_changes(path: str | os.PathLike[str]) -> bool:
        number = journal_generation(os.path.basename(path))
        try:
            size = os.stat(path).st_size
        except FileNotFoundError:
            return False
        return number is None or size > len(journal_header(number))
