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

Every file is created 0600: job output is private to its user.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

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


def read_chunks(live: Path, chunk: int = 65536) -> Iterator[bytes]:
    """The stream's kept output, in order: the rotated part, then the live
    file. Yields nothing if neither exists."""
    for path in (rotated_path(live), live):
        try:
            fh = path.open("rb")
        except FileNotFoundError:
            continue
        with fh:
            while data := fh.read(chunk):
                yield data


def open_private_append(path: Path) -> int:
    """Open ``path`` for appending, created 0600; returns the descriptor."""
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)


def make_private_dirs(directory: Path) -> None:
    """Create ``directory`` and any missing parents, each private to the
    user (0700, whatever the umask); existing ones keep their mode."""
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
    descriptor. The executor calls this when the stream first produces
    output."""
    try:
        return open_private_append(path)
    except FileNotFoundError:
        make_private_dirs(path.parent)
        return open_private_append(path)


def worker_host(worker_id: str) -> str:
    """The host part of a worker id (``host:pid:random``, see
    :class:`queuectl_core.worker.Worker`)."""
    parts = worker_id.rsplit(":", 2)
    return parts[0] if len(parts) == 3 else worker_id


def remove_job_logs(root: Path, job_ids: list[str]) -> None:
    """Delete the output of purged jobs (those on this machine)."""
    import shutil

    for job_id in job_ids:
        shutil.rmtree(job_log_dir(root, job_id), ignore_errors=True)
