"""Files under ``$QUEUECTL_HOME`` are opened without following symbolic
links: whoever can write the home could otherwise point ``logs/jobs`` (or
one output file) anywhere, and have queuectl append to, create or delete
files there with the rights of the user running it.

A directory below a trusted base is opened component by component with
``O_NOFOLLOW | O_DIRECTORY`` (created 0700 when missing, if asked); files
are then opened, renamed and removed relative to that descriptor, their own
name never followed either. A symbolic link met on the way raises
:class:`SymlinkRefusedError` (an ``OSError``) naming it."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    StrPath = str | Path

#: Added to every open of a file queuectl creates or writes in the home.
NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class SymlinkRefusedError(OSError):
    """A path inside the home is a symbolic link; queuectl does not follow it."""

    def __init__(self, path: StrPath) -> None:
        super().__init__(errno.ELOOP, "is a symbolic link, not followed", os.fspath(path))

    def __str__(self) -> str:
        return f"{self.filename} is a symbolic link (queuectl never follows one in its home)"


def _is_symlink(name: str, dir_fd: int) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def open_dir(base: StrPath, parts: Sequence[str], *, create: bool = False) -> int:
    """A descriptor of ``base/parts[0]/parts[1]/...``: ``base`` itself is
    followed (it is the trusted home, or a directory inside it already
    checked), none of ``parts`` is. Missing ones are created 0700 if
    ``create``, else FileNotFoundError."""
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    path: StrPath = base
    try:
        for part in parts:
            path = os.path.join(path, part)
            try:
                child = _open_child_dir(part, fd, path)
            except FileNotFoundError:
                if not create:
                    raise
                try:
                    os.mkdir(part, 0o700, dir_fd=fd)
                    made = True
                except FileExistsError:
                    made = False
                child = _open_child_dir(part, fd, path)
                if made:
                    os.fchmod(child, 0o700)  # whatever the umask
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_child_dir(part: str, fd: int, path: StrPath) -> int:
    try:
        return os.open(part, _DIR_FLAGS, dir_fd=fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR) and _is_symlink(part, fd):
            raise SymlinkRefusedError(path) from None
        raise


def open_file(dir_fd: int, name: str, flags: int, mode: int = 0o600, *,
              shown: StrPath | None = None) -> int:
    """``os.open(name, flags | O_NOFOLLOW, dir_fd=dir_fd)``, a symbolic
    link reported as :class:`SymlinkRefusedError` (named ``shown``)."""
    try:
        return os.open(name, flags | NOFOLLOW, mode, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise SymlinkRefusedError(shown if shown is not None else name) from None
        raise


def open_below(base: StrPath, parts: Sequence[str], flags: int, mode: int = 0o600, *,
               create_dirs: bool = True) -> int:
    """Open the file ``base/parts[0]/.../parts[-1]`` following no symbolic
    link below ``base``; missing directories are created 0700 when
    ``create_dirs``."""
    dir_fd = open_dir(base, parts[:-1], create=create_dirs)
    try:
        return open_file(dir_fd, parts[-1], flags, mode, shown=os.path.join(base, *parts))
    finally:
        os.close(dir_fd)


@contextlib.contextmanager
def opened_dir(base: StrPath, parts: Sequence[str], *, create: bool = False) -> Iterator[int]:
    """:func:`open_dir` as a context manager (closes the descriptor)."""
    fd = open_dir(base, parts, create=create)
    try:
        yield fd
    finally:
        os.close(fd)


def write_atomic(base: StrPath, parts: Sequence[str], text: str) -> None:
    """Write ``base/parts...`` (0600) through a temporary file and a
    rename, both relative to its directory's descriptor."""
    *dirs, name = parts
    with opened_dir(base, dirs, create=True) as dir_fd:
        tmp = f"{name}.tmp{os.getpid()}"
        fd = open_file(dir_fd, tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                       shown=os.path.join(base, *dirs, tmp))
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dir_fd)
            raise
