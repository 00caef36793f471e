"""Files of the JSON store: JSON encoding, whole reads and writes, atomic
replacement (temp file, ``fsync``, ``rename``, ``fsync`` of the directory),
and the one file per finished job (``jobs/<hh>/<sha256>.json``).

Nothing here knows the journal or the index; errors in stored data are
raised as :class:`Damaged` (what is wrong) or, with the file named, as a
``StorageError`` from :func:`damaged`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from queuectl_core.errors import StorageError, StoreDamagedError

from .records import FINISHED_STATES, V2_JOB_FIELDS, Damaged, Record, check_job, upgrade_v1

log = logging.getLogger(__name__)

JOBS_DIR = "jobs"
TMP_DIR = "tmp"

#: What an error about a damaged file tells the user to do.
ADVICE = (
    "queuectl will not guess or overwrite it: stop the workers, move the file aside and "
    "restore it from a backup (or repair it by hand), then try again"
)


def damaged(path: Path, reason: str, line: int | None = None, *,
            advice: str = ADVICE) -> StorageError:
    """The error for a damaged file (and line), naming it."""
    where = f"{path}, line {line}," if line is not None else str(path)
    return StoreDamagedError(f"JSON store file {where} is damaged: {reason}. {advice}")


def dumps(obj: Any) -> bytes:
    """Compact JSON, UTF-8 (readable non-ASCII); ``\\u`` escapes only for
    text that is not valid Unicode (lone surrogates)."""
    try:
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":"),
                          allow_nan=False).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode("ascii")


def loads(data: bytes) -> Any:
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise Damaged(f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise Damaged(f"not valid JSON ({exc.msg} at line {exc.lineno} column "
                      f"{exc.colno})") from None


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def pread_all(fd: int, size: int, offset: int) -> bytes:
    chunks = []
    while size > 0:
        chunk = os.pread(fd, min(size, 1 << 24), offset)
        if not chunk:
            break
        chunks.append(chunk)
        size -= len(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def job_file_name(job_id: str) -> str:
    """The file name (inside its shard) of a finished job: job ids may hold
    any printable character, ``/`` included, so the name is a digest."""
    return hashlib.sha256(job_id.encode("utf-8", "surrogatepass")).hexdigest() + ".json"


class Files:
    """Writes and reads the store's files (``fsync`` as configured)."""

    def __init__(self, directory: Path, *, fsync: bool) -> None:
        self.directory = directory
        self.fsync = fsync
        self.jobs_dir = directory / JOBS_DIR
        self.tmp_dir = directory / TMP_DIR
        self._shards: set[str] = set()

    # ---------------------------------------------------------- generic
    def mkdir(self, path: Path, *, parents: bool = False) -> None:
        """Create a private directory (and make its entry durable)."""
        try:
            path.mkdir(mode=0o700, parents=parents)
        except FileExistsError:
            return
        if self.fsync:
            fsync_dir(path.parent)

    def sync_dirs(self, directories: Iterable[Path]) -> None:
        if self.fsync:
            for directory in sorted(set(directories)):
                fsync_dir(directory)

    def atomic_write(self, path: Path, data: bytes, *, sync_dir: bool = True) -> None:
        """Replace ``path`` with ``data`` whole: readers see the old file or
        the new one, after a crash too."""
        tmp = self.tmp_dir / f"{os.getpid()}-{secrets.token_hex(8)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            try:
                write_all(fd, data)
                if self.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        if self.fsync and sync_dir:
            fsync_dir(path.parent)

    # ---------------------------------------------------------- job files
    def job_path(self, job_id: str) -> Path:
        name = job_file_name(job_id)
        return self.jobs_dir / name[:2] / name

    def write_finished(self, records: Iterable[Record]) -> None:
        """Write finished jobs' files (each atomically), then make their
        directory entries durable: one ``fsync`` per shard, not per file."""
        shards: set[Path] = set()
        for rec in records:
            path = self.job_path(rec["id"])
            if path.parent.name not in self._shards:
                self.mkdir(path.parent)
                self._shards.add(path.parent.name)
            doc = {k: v for k, v in rec.items() if k != "claim_token"}
            self.atomic_write(path, dumps(doc) + b"\n", sync_dir=False)
            shards.add(path.parent)
        self.sync_dirs(shards)

    def remove_finished(self, job_ids: Iterable[str]) -> None:
        """Remove the files of jobs that a committed line took away; missing
        files are fine."""
        shards: set[Path] = set()
        for job_id in job_ids:
            path = self.job_path(job_id)
            try:
                os.unlink(path)
            except FileNotFoundError:
                continue
            shards.add(path.parent)
        self.sync_dirs(shards)

    def read_finished(self, job_id: str) -> Record | None:
        """A finished job's file, or None if there is none (the caller knows
        whether the job is finished: an active record wins over a file)."""
        path = self.job_path(job_id)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        return self.parse_finished(path, data)

    def parse_finished(self, path: Path, data: bytes) -> Record:
        try:
            rec = loads(data)
            if isinstance(rec, dict) and not any(k in rec for k in V2_JOB_FIELDS):
                rec = upgrade_v1(rec)  # written by format 1
            rec = check_job(rec, FINISHED_STATES)
            name = job_file_name(rec["id"])
            if name != path.name or path.parent.name != path.name[:2]:
                raise Damaged(f"it holds job {rec['id']!r}, whose file is "
                              f"{JOBS_DIR}/{name[:2]}/{name}")
        except Damaged as exc:
            raise damaged(path, str(exc)) from None
        return rec

    def finished_files(self, *, skip_damaged: bool = False) -> Iterator[Record]:
        """Every finished job file (no lock needed: each is replaced whole).
        A damaged file raises StorageError, or with ``skip_damaged`` is
        logged and skipped."""
        try:
            shards = sorted(e.path for e in os.scandir(self.jobs_dir) if e.is_dir())
        except FileNotFoundError:
            return
        for shard in shards:
            try:
                names = sorted(e.name for e in os.scandir(shard) if e.name.endswith(".json"))
            except FileNotFoundError:
                continue
            for name in names:
                path = Path(shard, name)
                try:
                    data = path.read_bytes()
                except FileNotFoundError:
                    continue
                try:
                    rec = self.parse_finished(path, data)
                except StorageError as exc:
                    if not skip_damaged:
                        raise
                    log.warning("%s", exc)
                    continue
                yield rec

    def has_finished_files(self) -> bool:
        return any(any(shard.iterdir()) for shard in self.jobs_dir.iterdir() if shard.is_dir())

    def clear_tmp(self) -> None:
        """Remove temporary files: only written under the exclusive lock, so
        under it any left over belongs to a process that died."""
        for entry in os.scandir(self.tmp_dir):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
