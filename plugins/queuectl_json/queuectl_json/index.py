"""The finished-job index, ``index/<state>/<hour>.jsonl``: which finished
jobs finished in which hour, so that a purge (a retention sweep: "the oldest
1000 completed jobs finished before ...") finds them without reading every
job file.

It is a hint, never the truth. Entries of the jobs that finished since the
snapshot are kept in memory (``State.fresh``) and appended here by
compaction, before the snapshot that forgets them. A search checks every
entry against the job's record; entries that no longer match (the job was
retried, purged, finished again) are dropped when a search meets them, and
the entries of purged jobs once their purge is committed. Duplicates (a
crash between appending and the snapshot) are harmless.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .files import Files, damaged, dumps, loads, pread_all, write_all
from .records import FINISHED_ORDER, Damaged, Record, finish_key, is_int

INDEX_DIR = "index"
#: Each index file covers the jobs that finished in one hour.
INDEX_BUCKET_MS = 3_600_000
INDEX_ADVICE = (
    "the index only helps purges find old jobs: stop the workers and remove the "
    f"{INDEX_DIR} directory; it is rebuilt from the job files when the store is next opened"
)
_INDEX_NAME = re.compile(r"-?[0-9]+\.jsonl")

#: One line: ``[finish key, seq, job id]``.
Entry = tuple[int, int, str]


def bucket(key: int) -> int:
    """The start of the index bucket (an hour, in epoch ms) holding ``key``."""
    return key - key % INDEX_BUCKET_MS


def _lines(entries: Iterable[Entry]) -> bytes:
    return b"".join(dumps(list(e)) + b"\n" for e in sorted(entries))


def _stat_key(path: Path) -> tuple[int, int, int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


@dataclass
class IndexFile:
    """One index file as a search read it."""

    path: Path
    entries: list[Entry]
    #: The file's identity when read (or last rewritten): whether
    #: ``entries`` is still what it holds.
    stat: tuple[int, int, int, int] | None = None
    #: Lines (positions in ``entries``) that no longer match their job.
    stale: set[int] = field(default_factory=set)


@dataclass
class Found:
    """What a search found: the jobs, oldest first, and the files it read."""

    records: list[Record]
    files: list[IndexFile]


class Index:
    def __init__(self, files: Files) -> None:
        self.files = files
        self.dir = files.directory / INDEX_DIR

    def exists(self) -> bool:
        return self.dir.is_dir()

    def create(self) -> None:
        self.files.mkdir(self.dir)

    def state_files(self, state: str) -> list[tuple[int, Path]]:
        """The index files of one state: (bucket start, path)."""
        try:
            entries = list(os.scandir(self.dir / state))
        except FileNotFoundError:
            return []
        return [(int(e.name[:-len(".jsonl")]), Path(e.path)) for e in entries
                if _INDEX_NAME.fullmatch(e.name)]

    def read(self, path: Path) -> list[Entry]:
        """The entries of one index file. A last line without its newline (a
        crash while appending) is ignored."""
        data = path.read_bytes()
        entries = []
        for number, line in enumerate(data[:data.rfind(b"\n") + 1].splitlines(), start=1):
            try:
                entry = loads(line)
                if not (isinstance(entry, list) and len(entry) == 3 and is_int(entry[0])
                        and is_int(entry[1]) and isinstance(entry[2], str)):
                    raise Damaged("an index entry must be [finish time, seq, job id]")
            except Damaged as exc:
                raise damaged(path, str(exc), number, advice=INDEX_ADVICE) from None
            entries.append((entry[0], entry[1], entry[2]))
        return entries

    # ---------------------------------------------------------- writing
    def append(self, fresh: dict[str, tuple[int, int, str]]) -> None:
        """Append entries (each sorted batch at the end of its file), durably:
        called before the snapshot that forgets the journal they come from."""
        groups: dict[tuple[str, int], list[Entry]] = defaultdict(list)
        for job_id, (key, seq, state) in fresh.items():
            groups[(state, bucket(key))].append((key, seq, job_id))
        new_files: set[Path] = set()
        for (state, start), entries in sorted(groups.items()):
            self.files.mkdir(self.dir / state)
            path = self.dir / state / f"{start}.jsonl"
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                size = os.fstat(fd).st_size
                if size == 0:
                    new_files.add(path.parent)
                elif os.pread(fd, 1, size - 1) != b"\n":
                    # A crash while appending: cut the unfinished line off.
                    whole = pread_all(fd, size, 0)
                    os.ftruncate(fd, whole.rfind(b"\n") + 1)
                write_all(fd, _lines(entries))
                if self.files.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
        self.files.sync_dirs(new_files)

    def rebuild(self, skip: Callable[[str], bool]) -> None:
        """Write the index afresh from the job files (a store of format 1,
        or one whose index was removed), leaving out the jobs ``skip`` names
        (active, purged, or finished since the snapshot: those are left to
        the next compaction, like every fresh entry). Built aside, then
        swapped in; a crash before the swap leaves the old index (or none,
        which the next open rebuilds). A damaged job file is left out (and
        logged): it is reported whenever it is read, but it must not keep the
        store from opening."""
        groups: dict[tuple[str, int], list[Entry]] = defaultdict(list)
        for rec in self.files.finished_files(skip_damaged=True):
            if not skip(rec["id"]):
                key = finish_key(rec)
                groups[(rec["state"], bucket(key))].append((key, rec["seq"], rec["id"]))
        tmp = self.files.tmp_dir
        new = tmp / f"index-{secrets.token_hex(8)}"
        self.files.mkdir(new)
        for state in FINISHED_ORDER:
            self.files.mkdir(new / state)
        for (state, start), entries in groups.items():
            self.files.atomic_write(new / state / f"{start}.jsonl", _lines(entries),
                                    sync_dir=False)
        self.files.sync_dirs(new / state for state in FINISHED_ORDER)
        old = tmp / f"index-old-{secrets.token_hex(8)}"
        with contextlib.suppress(FileNotFoundError):
            os.rename(self.dir, old)
        os.rename(new, self.dir)
        self.files.sync_dirs([tmp, self.files.directory])
        shutil.rmtree(old, ignore_errors=True)

    def rewrite(self, index: IndexFile, keep: list[Entry]) -> None:
        """Replace an index file's lines with ``keep`` (an emptied file is
        removed). Under the exclusive lock."""
        if keep:
            self.files.atomic_write(index.path, _lines(keep), sync_dir=False)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(index.path)
        index.entries = sorted(keep)
        index.stale = set()
        index.stat = _stat_key(index.path)

    def drop_stale(self, found: Found) -> None:
        """Drop the lines a search found out of date (under the exclusive
        lock, so they are still out of date)."""
        for index in found.files:
            if index.stale:
                self.rewrite(index, [e for i, e in enumerate(index.entries)
                                     if i not in index.stale])

    def drop_jobs(self, files: Iterable[IndexFile], job_ids: set[str]) -> None:
        """Drop the lines of purged jobs from the files a search read (once
        the purge is committed). A file changed since is read again."""
        for index in files:
            if _stat_key(index.path) != index.stat:
                if not index.path.exists():
                    continue
                index.entries, index.stale = self.read(index.path), set()
                index.stat = _stat_key(index.path)
            keep = [e for e in index.entries if e[2] not in job_ids]
            if len(keep) != len(index.entries):
                self.rewrite(index, keep)

    # ---------------------------------------------------------- searching
    def search(self, wanted: set[str], before: int | None, limit: int | None,
               fresh: dict[str, tuple[int, int, str]],
               lookup: Callable[[str], Record | None]) -> Found:
        """The oldest finished jobs in ``wanted`` states (and finished before
        ``before``), at most ``limit``, found through the index and the jobs
        that finished since the snapshot (``fresh``), one hour-bucket at a
        time from the oldest: each entry is checked against the job's
        record (``lookup``: its finished record, or None), and the search
        stops as soon as ``limit`` are found (later buckets hold only later
        jobs)."""
        paths: dict[int, list[Path]] = defaultdict(list)
        for state in sorted(wanted):
            for start, path in self.state_files(state):
                if before is None or start < before:
                    paths[start].append(path)
        Candidate = tuple[int, int, str, str, IndexFile | None, int]
        recent: dict[int, list[Candidate]] = defaultdict(list)
        for job_id, (key, seq, state) in fresh.items():
            if state in wanted and (before is None or key < before):
                recent[bucket(key)].append((key, seq, job_id, state, None, 0))
        found = Found([], [])
        chosen: set[str] = set()
        known: dict[str, Record | None] = {}
        for start in sorted(paths.keys() | recent.keys()):
            candidates = recent.get(start, [])
            for path in paths.get(start, []):
                read = IndexFile(path, [], _stat_key(path))
                read.entries = self.read(path)
                found.files.append(read)
                candidates.extend((key, seq, job_id, path.parent.name, read, line)
                                  for line, (key, seq, job_id) in enumerate(read.entries))
            candidates.sort(key=lambda c: (c[0], c[1]))
            for key, seq, job_id, state, index, line in candidates:
                if before is not None and key >= before:
                    break
                if job_id not in known:
                    known[job_id] = lookup(job_id)
                rec = known[job_id]
                if rec is None or (rec["state"], finish_key(rec), rec["seq"]) != (state, key,
                                                                                     seq):
                    if index is not None:
                        index.stale.add(line)
                    continue
                if job_id not in chosen:  # (else a line twice)
                    chosen.add(job_id)
                    found.records.append(rec)
                    if limit is not None and len(found.records) >= limit:
                        return found
        return found
