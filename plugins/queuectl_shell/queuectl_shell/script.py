"""Commands too long to be one argument run from a file.

Linux caps one argument (and one environment entry) at 128 KiB
(``MAX_ARG_STRLEN``), while a job's command may have up to 1,000,000
characters: ``sh -c <command>`` would fail with "Argument list too long". A
longer command is written to ``attempt-<N>.sh`` in the attempt's private
directory (0600, created as its output files are, no symbolic link
followed) and run as ``sh <file>``; the file is removed when the attempt
ends.
"""

from __future__ import annotations

import os
from pathlib import Path

from queuectl_core.joblogs import open_output_file, remove_output_file

#: Commands of at least this many bytes (UTF-8) run from a file: well below
#: the kernel's 131,072 bytes per argument.
SCRIPT_BYTES = 100_000


def too_long(command: str) -> bool:
    """Would ``command`` be too long, or close to it, as one argument?"""
    # A character is at most 4 bytes: the shortest commands are not encoded.
    return len(command) * 4 >= SCRIPT_BYTES and len(os.fsencode(command)) >= SCRIPT_BYTES


def script_path(log_dir: Path, attempt: int) -> Path:
    return log_dir / f"attempt-{attempt}.sh"


def write_script(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` (replacing an older file of that name)."""
    fd = open_output_file(path)
    try:
        os.ftruncate(fd, 0)
        data = memoryview(os.fsencode(text))
        while data:
            data = data[os.write(fd, data):]
    except BaseException:
        os.close(fd)
        remove_output_file(path)
        raise
    os.close(fd)


