"""Where an attempt's output lives on disk, and how it is read back.

Layout under ``$QUEUECTL_HOME/logs/jobs/<job dir>/`` (see
:func:`job_log_dir`): ``attempt-<N>.out`` and
``attempt-<N>.err`` hold what attempt N wrote to stdout and stderr, written
as the command runs. The directory and each file are created only when the
stream first produces output (:func:`open_output_file`): an attempt that
writes nothing leaves no files (and a job none of whose attempts wrote
anything has no directory), which saves a worker three file-system
metadata writes per job. Whether such an attempt ran on this machine is
told by its worker id (:func:`worker_host`), not by its files.

Size cap: when a stream's live file reaches half of ``output_max_bytes``,
the executor renames it to ``attempt-<N>.out.1`` (replacing an older one)
and starts a new live file. So at most ``output_max_bytes`` per stream are
on disk, and at least the newest half of that is kept; reading the ``.1``
file and then the live file gives the output in order. The file
``attempt-<N>.out.dropped`` then holds the number of bytes dropped so far.

Every file is created 0600: job output is private to its user. No
symbolic link below the home is followed (:mod:`queuectl_core.safefs`):
not ``logs``, ``logs/jobs``, a job's directory nor one of its files.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from .safefs import NOFOLLOW, SymlinkRefusedError, open_below, open_dir, open_file, opened_dir

_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")

Stream = Literal["out", "err"]
STREAMS: tuple[Stream, Stream] = ("out", "err")


def job_log_dir(root: Path, job_id: str) -> Path:
    """Directory for a job's output files under ``root``
    (``$QUEUECTL_HOME/logs/jobs``); ids that are not safe file names are
    replaced by a digest."""
    if _SAFE_ID.match(job_id):
        return root / job_id
    return root / ("id-" + hashlib.sha256(job_id.encode()).hexdigest()[:32])


def attempt_path(log_dir: Path, number: int, stream: Stream) -> Path:
    """The live file of one stream of attempt ``number``."""
    return log_dir / f"attempt-{number}.{stream}"


def rotated_path(live: Path) -> Path:
    return live.with_name(live.name + ".1")


def dropped_path(live: Path) -> Path:
    return live.with_name(live.name + ".dropped")


def dropped_bytes(live: Path) -> int:
    """How many bytes of this stream the cap has thrown away (0 if none)."""
    try:
        return int(dropped_path(live).read_text().strip() or 0)
    except (OSError, ValueError):
        return 0


def attempt_numbers(log_dir: Path) -> list[int]:
    """Numbers of the attempts that have output files here, ascending."""
    numbers = set()
    with contextlib.suppress(OSError):
        for entry in os.scandir(log_dir):
            name = entry.name
            if name.startswith("attempt-") and name.endswith((".out", ".err")):
                digits = name[len("attempt-"):-4]
                if digits.isdigit():
                    numbers.add(int(digits))
    return sorted(numbers)


def open_for_reading(path: Path) -> int:
    """A descriptor of the regular file ``path`` for reading, its own name
    never followed: a symbolic link raises SymlinkRefusedError, a FIFO or
    device (which could block or act on being opened) OSError."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | NOFOLLOW)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file", os.fspath(path))
    os.set_blocking(fd, True)
    return fd


def read_chunks(live: Path, chunk: int = 65536) -> Iterator[bytes]:
    """The stream's kept output, in order: the rotated part, then the live
    file. Yields nothing if neither exists."""
    for path in (rotated_path(live), live):
        try:
            fh = os.fdopen(open_for_reading(path), "rb")
        except FileNotFoundError:
            continue
        with fh:
            while data := fh.read(chunk):
                yield data


_APPEND = os.O_WRONLY | os.O_APPEND | os.O_CREAT


def _chain(path: Path) -> tuple[Path, list[str]]:
    """``path`` as a trusted base and the names below it that are never
    followed: the file, its job directory and the two above it
    (``logs/jobs/<job>/attempt-N.out`` below ``$QUEUECTL_HOME``)."""
    parents = path.parents
    depth = min(3, len(parents) - 1)
    return parents[depth], [*path.parts[len(path.parts) - depth - 1:]]


def open_private_append(path: Path) -> int:
    """Open ``path`` for appending, created 0600, following no symbolic
    link (the file itself, ``logs``, ``jobs`` or the job's directory);
    returns the descriptor."""
    base, parts = _chain(path)
    return open_below(base, parts, _APPEND, create_dirs=False)


def open_private_write(path: Path) -> int:
    """Open ``path`` for writing (not truncated), created 0600, following no
    symbolic link, as :func:`open_private_append`."""
    base, parts = _chain(path)
    return open_below(base, parts, os.O_WRONLY | os.O_CREAT, create_dirs=False)


def make_home_dirs(directory: Path) -> None:
    """Create ``directory`` and any missing parents, each 0700 (whatever the
    umask); existing ones keep their mode."""
    missing = []
    current = directory
    while not current.is_dir():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for path in reversed(missing):
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            continue
        os.chmod(path, 0o700)


def open_output_file(path: Path) -> int:
    """Open a stream's live file for appending, created 0600, creating its
    job directory (and missing parents, 0700) on first use; returns the
    descriptor. No symbolic link is followed: not the file, nor its job
    directory, ``jobs`` or ``logs`` (SymlinkRefusedError, an OSError). The
    executor calls this when the stream first produces output."""
    base, parts = _chain(path)
    try:
        return open_below(base, parts, _APPEND, create_dirs=True)
    except FileNotFoundError:
        make_home_dirs(base)
        return open_below(base, parts, _APPEND, create_dirs=True)


def rotate_output_file(live: Path) -> int:
    """Rename ``live`` to its ``.1`` name (replacing an older one) and open
    a new live file; both relative to the job directory's descriptor, no
    symbolic link followed. Returns the new descriptor."""
    base, parts = _chain(live)
    with opened_dir(base, parts[:-1]) as dir_fd:
        os.rename(live.name, rotated_path(live).name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        return open_file(dir_fd, live.name, _APPEND, shown=live)


def remove_output_file(path: Path) -> None:
    """Delete an attempt's file if it is there, following no symbolic link
    (as :func:`open_output_file`); a failure is ignored."""
    base, parts = _chain(path)
    with contextlib.suppress(OSError), opened_dir(base, parts[:-1]) as dir_fd:
        os.unlink(parts[-1], dir_fd=dir_fd)


def worker_host(worker_id: str) -> str:
    """The host part of a worker id (``host:pid:random``, see
    :class:`queuectl_core.worker.Worker`)."""
    parts = worker_id.rsplit(":", 2)
    return parts[0] if len(parts) == 3 else worker_id


def remove_job_logs(root: Path, job_ids: list[str]) -> list[str]:
    """Delete the output of purged jobs (those on this machine), never
    outside ``root`` (``$QUEUECTL_HOME/logs/jobs``): nothing is followed, so
    a symbolic ``logs``, ``jobs`` or job directory is left alone. Returns a
    one-line warning for each thing left alone."""
    import shutil

    warnings: list[str] = []
    try:
        dir_fd = open_dir(root.parent.parent, [root.parent.name, root.name])
    except FileNotFoundError:
        return warnings
    except OSError as exc:
        return [f"job output not deleted: {exc}"]
    try:
        for job_id in job_ids:
            name = job_log_dir(root, job_id).name
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            except OSError as exc:
                warnings.append(f"job output not deleted: {root / name}: {exc.strerror}")
                continue
            if stat.S_ISLNK(st.st_mode):
                warnings.append(f"job output not deleted: {SymlinkRefusedError(root / name)}")
                continue
            # With dir_fd, rmtree works on descriptors and never follows a link.
            shutil.rmtree(name, dir_fd=dir_fd, ignore_errors=True)
    finally:
        os.close(dir_fd)
    return warnings
