"""Workers refuse to run from a queue that other users can change: anyone
who can write the queue (or the config that picks it) can run commands as
the worker's user."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

from .errors import QueuectlError


class UnsafePermissionsError(QueuectlError):
    """A file or directory the workers trust is writable by other users."""


def check_not_writable_by_others(paths: Iterable[Path]) -> None:
    """Raise UnsafePermissionsError naming the first path (or parent
    directory of a file) that group or others may write, or that belongs to
    another user (root may run anyone's queue)."""
    uid = os.geteuid()
    seen: set[Path] = set()
    for path in paths:
        for target in (path, path.parent) if path.is_file() else (path,):
            if target in seen:
                continue
            seen.add(target)
            try:
                st = target.stat()
            except FileNotFoundError:
                continue
            mode = stat.S_IMODE(st.st_mode)
            sticky = bool(st.st_mode & stat.S_ISVTX)
            if mode & 0o022 and not (sticky and target != path):
                who = ("group and others" if mode & 0o022 == 0o022
                       else "group" if mode & 0o020 else "others")
                raise UnsafePermissionsError(
                    f"refusing to run workers: {target} is writable by {who} (mode {mode:04o}),"
                    " and anyone who can write the queue can run commands as you; fix it with:"
                    f" chmod go-w '{target}'")
            if uid != 0 and st.st_uid != uid:
                raise UnsafePermissionsError(
                    f"refusing to run workers: {target} belongs to another user (uid "
                    f"{st.st_uid}); use a QUEUECTL_HOME of your own")
