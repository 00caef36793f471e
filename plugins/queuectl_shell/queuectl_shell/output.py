"""Where a command's output goes: each stream copied to its attempt file,
rotated at half the size cap, with its last bytes kept in a bounded ring
for the tails the store keeps (see :mod:`queuectl_core.joblogs`)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from queuectl_core.joblogs import (
    dropped_bytes,
    dropped_path,
    open_output_file,
    open_private_write,
    rotate_output_file,
    rotated_path,
)

log = logging.getLogger("queuectl_shell.executor")

#: What POSIX shells exit with when a command is not found / not executable.
EXIT_NOT_FOUND = 127
EXIT_CANNOT_EXECUTE = 126


def exit_error(code: int, stderr_tail: str) -> str | None:
    """The error message for a command that exited with ``code``."""
    if code == 0:
        return None
    if code == EXIT_NOT_FOUND and "not found" not in stderr_tail:
        prefix = f"command not found (exit {EXIT_NOT_FOUND})"
        return f"{prefix}: {stderr_tail}" if stderr_tail else prefix
    return stderr_tail or f"command exited with code {code}"


def tail_text(data: bytes | bytearray, cut: bool) -> str:
    """``data``, the end of a stream, as text. ``cut``: the stream had more
    bytes before ``data``, so a partial UTF-8 character at the start (at most
    3 continuation bytes) is left out."""
    start = 0
    if cut:
        while start < min(3, len(data)) and data[start] & 0xC0 == 0x80:
            start += 1
        if start == 3 and start < len(data) and data[start] & 0xC0 == 0x80:
            start = 0  # 4 or more continuation bytes: not UTF-8 anyway
    return str(data[start:], "utf-8", "replace")


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        written = os.write(fd, data)
        data = data[written:]


class _Output:
    """One stream's destination: the live file (rotated at half the cap),
    its dropped-bytes counter, and the ring of its last bytes. The live file
    (with its directory) is created on the first output."""

    __slots__ = ("broken", "dropped", "dropped_fd", "dropped_len", "fd", "half", "path", "problem",
                 "ring", "ring_limit", "size", "total")

    def __init__(self, path: Path, max_bytes: int, ring_limit: int) -> None:
        self.path = path
        self.fd = -1  # opened by the first feed()
        #: Rotate when the live file reaches this many bytes; None: no cap.
        #: 0 (a cap of 1 byte): nothing is kept.
        self.half: int | None = max_bytes // 2 if max_bytes > 0 else None
        self.size = -1  # of the live file; read on the first write (it may hold older output)
        self.dropped = -1  # read from the .dropped file when first needed
        self.dropped_fd = -1
        self.dropped_len = 0
        self.ring = bytearray()
        self.ring_limit = ring_limit
        self.total = 0
        self.broken = False
        #: Why the rest of this stream's output was not stored, if it was not.
        self.problem: str | None = None

    def feed(self, data: memoryview) -> None:
        self.total += len(data)
        limit = self.ring_limit
        if limit:
            ring = self.ring
            if len(data) >= limit:
                ring[:] = data[len(data) - limit:]
            else:
                ring += data
                if len(ring) > limit:
                    del ring[:len(ring) - limit]
        if self.broken:
            return
        try:
            if self.fd < 0:
                # Append: earlier output of the same attempt number (if
                # any) must not be lost.
                self.fd = open_output_file(self.path)
            if self.half is None:
                _write_all(self.fd, data)
            else:
                self._store_capped(data, self.half)
        except OSError as exc:
            # Keep the command running (and its pipe drained); the rest of
            # this stream's output is lost.
            self.broken = True
            self.problem = f"cannot write {self.path}: {exc.strerror or exc}"
            log.warning("cannot write job output to %s (%s); discarding the rest of it",
                        self.path, exc)

    def _store_capped(self, data: memoryview, half: int) -> None:
        if self.size < 0:
            self.size = os.fstat(self.fd).st_size
        n = len(data)
        pos = 0
        dropped = 0
        if half == 0:
            pos = dropped = n
        while pos < n:
            room = half - self.size
            if n - pos < room:
                _write_all(self.fd, data[pos:])
                self.size += n - pos
                break
            if room > 0:
                _write_all(self.fd, data[pos:pos + room])
                self.size += room
                pos += room
            dropped += self._rotate()
            rest = n - pos
            if rest >= 2 * half:
                # All but the last full file's worth of what is left would be
                # rotated out at once: skip writing it.
                skip = (rest // half - 1) * half
                pos += skip
                dropped += skip
        if dropped:
            self._add_dropped(dropped)

    def _rotate(self) -> int:
        """Rename the live file to ``.1`` and start a new one; returns the
        bytes this drops (the older ``.1``)."""
        rotated = rotated_path(self.path)
        try:
            older = os.stat(rotated, follow_symlinks=False).st_size
        except FileNotFoundError:
            older = 0
        fd = rotate_output_file(self.path)
        os.close(self.fd)
        self.fd = fd
        self.size = 0
        return older

    def _add_dropped(self, count: int) -> None:
        if self.dropped_fd < 0:
            self.dropped = dropped_bytes(self.path)
            self.dropped_fd = open_private_write(dropped_path(self.path))
            self.dropped_len = -1
        self.dropped += count
        text = f"{self.dropped}\n".encode()
        # The count only grows, so its text never gets shorter: overwriting
        # in place is one write, and a reader never sees an empty file.
        os.pwrite(self.dropped_fd, text, 0)
        if self.dropped_len < 0:
            os.ftruncate(self.dropped_fd, len(text))
        self.dropped_len = len(text)

    def tail(self, limit: int) -> str:
        """The last ``limit`` bytes of the stream (at most the ring's size)."""
        ring = self.ring
        if limit < len(ring):
            return tail_text(ring[len(ring) - limit:], True)
        return tail_text(ring, self.total > len(ring))

    def close(self) -> None:
        for fd in (self.fd, self.dropped_fd):
            if fd >= 0:
                os.close(fd)
        self.fd = self.dropped_fd = -1
