"""JSON file implementation of the storage seam.

On-disk layout (one directory, see the README for the record formats)::

    lock                           flock(2) target; empty
    snapshot.json                  active jobs, settings, workers, paused queues,
                                   counters (generation G)
    journal-<G>.jsonl              one JSON line per committed change since snapshot G
    jobs/<hh>/<sha256>.json        one file per finished (completed, dead or cancelled) job
    index/<state>/<hour>.jsonl     which finished jobs finished in that hour (for purge)
    tmp/                           temporary files, renamed into place

Every operation holds ``flock`` on ``lock`` (shared to read, exclusive to
change), catches up with what other processes did (a new snapshot is seen by
its inode; new journal lines from the last offset this process read), and a
change is committed by appending one line to the journal (then ``fsync``).
A job that finishes is first written to its own file (atomically: temp file,
``fsync``, ``rename``, ``fsync`` of the directory); the journal line that
removes it from the active set is the commit point. Until that line exists
the active record wins, so a crash in between leaves the old state.

Only active jobs are in the snapshot and the journal, so the cost of an
operation does not grow with the number of finished jobs.

An import (``queuectl import``) is one journal line too, so that all of it
becomes visible at once: its finished jobs cannot be written to their files
first (nothing active would hide them if the line never came). They are kept
in memory, "imported, file not yet written", and read like files, until the
importer has written their files and committed a second line that drops them.
A crash in between leaves them in the journal; the next import or compaction
writes their files (compaction before the snapshot that forgets them).

A purge is the mirror image: its journal line is the commit point, and the
files are removed after it. Until the next snapshot, every process that has
read the line hides those ids ("purged, file may linger"), and compaction
removes any file a crash left behind before writing the snapshot that forgets
the line.

The finished-job index (``index/``) lets a purge find the oldest finished
jobs without reading every job file. It is a hint, never the truth: entries
of the jobs that finished since the snapshot are kept in memory (from the
journal) and appended to it by compaction, before the snapshot that forgets
them; a purge checks every entry against the job's own record, and entries
that no longer match (the job was retried, purged, finished again) are
dropped when a purge meets them. Duplicates (a crash between appending and
the snapshot) are harmless.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple, TypeGuard

from queuectl_core.errors import (
    DuplicateJobError,
    InvalidStateError,
    JobNotFoundError,
    StorageError,
)
from queuectl_core.models import (
    DEFAULT_QUEUE,
    Attempt,
    Claim,
    ExecResult,
    Job,
    JobState,
    NewJob,
    WorkerInfo,
    record_from_dict,
)
from queuectl_core.storage import (
    CANCELLED_ERROR,
    INTERRUPTED_ATTEMPT_ERROR,
    LOST_ATTEMPT_ERROR,
    Storage,
)

log = logging.getLogger(__name__)

FORMAT = "queuectl-json"
#: 2: jobs have queue, timeout, cwd, env, retry and cancel_requested_at,
#: attempts have output tails; cancelled jobs; paused queues; purge; the
#: finished-job index. A version 1 store is read as it is, and upgraded by the
#: first change (opening a store is one).
FORMAT_VERSION = 2
SNAPSHOT = "snapshot.json"
LOCK = "lock"
JOBS_DIR = "jobs"
INDEX_DIR = "index"
TMP_DIR = "tmp"
JOURNAL_PREFIX = "journal-"
JOURNAL_SUFFIX = ".jsonl"
#: Each index file covers the jobs that finished in one hour.
INDEX_BUCKET_MS = 3_600_000

Record = dict[str, Any]

ACTIVE_STATES = frozenset({"pending", "processing", "failed"})
FINISHED_STATES = frozenset({"completed", "dead", "cancelled"})
FINISHED_ORDER = ("completed", "dead", "cancelled")
CLAIMABLE_STATES = frozenset({"pending", "failed"})
IMPORTABLE_STATES = (ACTIVE_STATES - {"processing"}) | FINISHED_STATES
#: What format 1 knew.
V1_FINISHED_STATES = frozenset({"completed", "dead"})

_JOB_FIELDS = Job.field_names()
_INT_FIELDS = ("attempts", "max_retries", "priority", "run_at", "created_at", "updated_at")
_OPT_INT_FIELDS = ("started_at", "finished_at", "lease_expires_at", "exit_code",
                   "cancel_requested_at")
_SETTABLE = frozenset(_JOB_FIELDS) - {"id"} | {"claim_token"}
_ATTEMPT_KEYS = frozenset(Attempt.field_names()) - {"job_id"}
#: Fields that format 2 added, with the value a format 1 record means.
_V2_JOB_FIELDS: dict[str, Any] = {"queue": DEFAULT_QUEUE, "timeout": None, "cwd": None,
                                  "env": None, "retry": None, "cancel_requested_at": None}
_V2_ATTEMPT_FIELDS: dict[str, Any] = {"stdout_tail": None, "stderr_tail": None}
_INDEX_NAME = re.compile(r"-?[0-9]+\.jsonl")

_ADVICE = (
    "queuectl will not guess or overwrite it: stop the workers, move the file aside and "
    "restore it from a backup (or repair it by hand), then try again"
)
_INDEX_ADVICE = (
    "the index only helps purges find old jobs: stop the workers and remove the "
    f"{INDEX_DIR} directory; it is rebuilt from the job files when the store is next opened"
)


class _Damaged(Exception):
    """What is wrong with some stored data; the caller says where."""


class _Finished(NamedTuple):
    """What a purge needs to know of a finished job."""

    id: str
    state: str
    queue: str
    key: int  # finished_at (or updated_at)
    seq: int


class _IndexFile:
    """One index file as read by a purge, and which of its lines to drop."""

    __slots__ = ("drop", "entries", "path")

    def __init__(self, path: Path, entries: list[tuple[int, int, str]]) -> None:
        self.path = path
        self.entries = entries
        self.drop: set[int] = set()


# ---------------------------------------------------------------- file helpers

def _dumps(obj: Any) -> bytes:
    """Compact JSON, UTF-8 (readable non-ASCII); ``\\u`` escapes only for
    text that is not valid Unicode (lone surrogates)."""
    try:
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":"),
                          allow_nan=False).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode("ascii")


def _loads(data: bytes) -> Any:
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise _Damaged(f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise _Damaged(f"not valid JSON ({exc.msg} at line {exc.lineno} column "
                       f"{exc.colno})") from None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def _pread_all(fd: int, size: int, offset: int) -> bytes:
    chunks = []
    while size > 0:
        chunk = os.pread(fd, min(size, 1 << 24), offset)
        if not chunk:
            break
        chunks.append(chunk)
        size -= len(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def job_file_name(job_id: str) -> str:
    """The file name (inside its shard) of a finished job: job ids may hold
    any printable character, ``/`` included, so the name is a digest."""
    return hashlib.sha256(job_id.encode("utf-8", "surrogatepass")).hexdigest() + ".json"


def _finish_key(rec: Record) -> int:
    """When a finished job finished (what purge ages and orders it by)."""
    finished = rec["finished_at"]
    return int(rec["updated_at"] if finished is None else finished)


def _bucket(key: int) -> int:
    """The start of the index bucket (an hour, in epoch ms) holding ``key``."""
    return key - key % INDEX_BUCKET_MS


# ---------------------------------------------------------------- validation

def _upgrade_v1(rec: Any) -> Any:
    """A job record as format 1 wrote it, with the fields format 2 added
    (their defaults: what the record meant). Anything else is returned as
    it is, for the checks to reject."""
    if not isinstance(rec, dict):
        return rec
    new = {**_V2_JOB_FIELDS, **rec}
    history = rec.get("history")
    if isinstance(history, list):
        new["history"] = [{**_V2_ATTEMPT_FIELDS, **h} if isinstance(h, dict) else h
                          for h in history]
    return new


def _check_job(rec: Any, states: frozenset[str]) -> Record:
    """A job record as stored (job fields + ``seq``, ``claim_token``,
    ``history``), or _Damaged."""
    if not isinstance(rec, dict):
        raise _Damaged("a job record is not a JSON object")
    job_id = rec.get("id")
    if not isinstance(job_id, str):
        raise _Damaged("a job record has no text 'id'")
    what = f"job {job_id!r}"
    missing = [k for k in (*_JOB_FIELDS, "seq", "history") if k not in rec]
    if missing:
        raise _Damaged(f"{what}: missing {', '.join(missing)}")
    if rec["state"] not in states:
        raise _Damaged(f"{what}: state {rec['state']!r} does not belong here "
                       f"(expected one of {', '.join(sorted(states))})")
    for key in ("seq", *_INT_FIELDS):
        if not _is_int(rec[key]):
            raise _Damaged(f"{what}: {key} is not a whole number")
    for key in _OPT_INT_FIELDS:
        if rec[key] is not None and not _is_int(rec[key]):
            raise _Damaged(f"{what}: {key} is not a whole number or null")
    token = rec.get("claim_token")
    if (rec["state"] == "processing") != isinstance(token, str) or (
            token is not None and not isinstance(token, str)):
        raise _Damaged(f"{what}: claim_token does not match state {rec['state']!r}")
    if rec["state"] == "processing" and not _is_int(rec["lease_expires_at"]):
        raise _Damaged(f"{what}: a processing job needs lease_expires_at")
    history = rec["history"]
    if not isinstance(history, list):
        raise _Damaged(f"{what}: history is not a list")
    try:
        record_from_dict(Job, {k: rec[k] for k in _JOB_FIELDS})
        for entry in history:
            if not isinstance(entry, dict) or set(entry) != _ATTEMPT_KEYS:
                raise _Damaged(f"{what}: a history entry is not an attempt record")
            record_from_dict(Attempt, {**entry, "job_id": job_id})
    except ValueError as exc:
        raise _Damaged(f"{what}: {exc}") from None
    if _is_int(rec["timeout"]):  # written by hand: keep the type exact
        rec["timeout"] = float(rec["timeout"])
    return rec


def _check_worker(rec: Any) -> Record:
    if not isinstance(rec, dict):
        raise _Damaged("a worker record is not a JSON object")
    if not (_is_int(rec.get("heartbeat_at")) and _is_int(rec.get("started_at"))):
        raise _Damaged("a worker record lacks whole-number started_at/heartbeat_at")
    try:
        record_from_dict(WorkerInfo, rec)
    except ValueError as exc:
        raise _Damaged(f"worker record: {exc}") from None
    return rec


def _check_counts(value: Any, states: frozenset[str]) -> dict[str, int]:
    if (not isinstance(value, dict) or set(value) != states
            or not all(_is_int(n) for n in value.values())):
        raise _Damaged(f"'finished' must count {', '.join(sorted(states))} jobs")
    return {state: value.get(state, 0) for state in FINISHED_ORDER}


def _merged(rec: Record, fields: Any, attempt: Any) -> Record:
    """A new record: ``rec`` with ``fields`` set and one history entry
    appended (``index == len(history)``) or updated. Pure, so replaying a
    journal line twice gives the same result."""
    if not isinstance(fields, dict) or not set(fields) <= _SETTABLE:
        raise _Damaged("a 'set' operation changes unknown fields")
    new = dict(rec)
    new.update(fields)
    if attempt is not None:
        if not isinstance(attempt, dict):
            raise _Damaged("an attempt change is not a JSON object")
        index, change = attempt.get("index"), attempt.get("set")
        history = list(rec["history"])
        if not _is_int(index) or not isinstance(change, dict) or not 0 <= index <= len(history):
            raise _Damaged("an attempt change names no existing attempt")
        if index == len(history):
            history.append(dict(change))
        else:
            history[index] = {**history[index], **change}
        new["history"] = history
    return new


def _to_job(rec: Record) -> Job:
    values = {k: rec[k] for k in _JOB_FIELDS}
    for key in ("env", "retry"):  # the caller gets its own copy
        if values[key] is not None:
            values[key] = dict(values[key])
    return Job(**values)


def _to_attempts(rec: Record) -> list[Attempt]:
    return [Attempt(**{**h, "job_id": rec["id"]}) for h in rec["history"]]


def _claim_key(rec: Record) -> tuple[int, int, int]:
    return (-rec["priority"], rec["run_at"], rec["seq"])


def _open_attempt(number: int, worker_id: str, now: int) -> Record:
    return {"number": number, "worker_id": worker_id, "started_at": now, "finished_at": None,
            "outcome": "running", "exit_code": None, "signal": None, "error": None,
            "stdout_tail": None, "stderr_tail": None}


# ---------------------------------------------------------------- the store

class JsonStorage(Storage):
    """A queue kept in JSON files in one directory, shared by any number of
    processes on one machine."""

    def __init__(self, directory: Path, *, fsync: bool = True,
                 compact_bytes: int = 1_048_576, lock_timeout_ms: int = 30_000) -> None:
        self.directory = Path(directory)
        self.fsync = fsync
        self.compact_bytes = compact_bytes
        self.lock_timeout = lock_timeout_ms / 1000
        self._snapshot_path = self.directory / SNAPSHOT
        self._jobs_dir = self.directory / JOBS_DIR
        self._index_dir = self.directory / INDEX_DIR
        self._tmp_dir = self.directory / TMP_DIR
        self._shards: set[str] = set()
        self._closed = False
        self._pid = os.getpid()
        # What this process has read: the snapshot (kept open, so its inode
        # cannot be reused while we compare against it) and the journal.
        self._snap_fd: int | None = None
        self._snap_key: tuple[int, int, int, int] | None = None
        self._snap_size = 0
        self._generation = 0
        self._version = FORMAT_VERSION  # of the snapshot read (and its journal)
        self._journal_fd: int | None = None
        self._journal_offset = 0
        self._journal_lines = 0
        # The state, as of that point.
        self._next_seq = 1
        # Finished jobs (in files, or imported and not yet written): queue ->
        # state -> how many.
        self._finished: dict[str, dict[str, int]] = {}
        self._settings: dict[str, Any] = {}
        self._workers: dict[str, Record] = {}
        self._paused: set[str] = set()
        self._jobs: dict[str, Record] = {}
        # Finished jobs committed by an ``import`` line whose files may not
        # be written yet (until an ``imported`` line or a compaction). They
        # count in ``_finished`` and are read like files; never active.
        self._unwritten: dict[str, Record] = {}
        # Jobs purged since the snapshot: their files may still exist (a
        # crash right after the purge line) and are ignored; compaction
        # removes them before it writes the snapshot that forgets the line.
        self._purged: set[str] = set()
        # Jobs that finished since the snapshot: id -> (finish key, seq,
        # state). Compaction appends them to the index.
        self._fresh: dict[str, tuple[int, int, str]] = {}
        try:
            self._mkdir(self.directory, parents=True)
            self._lock_fd = os.open(self.directory / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StorageError(f"cannot open JSON store {self.directory}: {exc.strerror}"
                               ) from None
        try:
            with self._locked(exclusive=True, init=True):
                pass
        except BaseException:
            self.close()
            raise

    # ---------------------------------------------------------- plumbing
    def describe(self) -> str:
        return f"json {self.directory}"

    def local_paths(self) -> list[Path]:
        return [self.directory]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for fd in (self._snap_fd, self._journal_fd, self._lock_fd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._snap_fd = self._journal_fd = None

    def _journal_path(self, generation: int) -> Path:
        return self.directory / f"{JOURNAL_PREFIX}{generation}{JOURNAL_SUFFIX}"

    def _job_path(self, job_id: str) -> Path:
        name = job_file_name(job_id)
        return self._jobs_dir / name[:2] / name

    def _damaged(self, path: Path, reason: str, line: int | None = None, *,
                 advice: str = _ADVICE) -> StorageError:
        where = f"{path}, line {line}," if line is not None else str(path)
        return StorageError(f"JSON store file {where} is damaged: {reason}. {advice}")

    def _mkdir(self, path: Path, *, parents: bool = False) -> None:
        """Create a private directory (and make its entry durable)."""
        try:
            path.mkdir(mode=0o700, parents=parents)
        except FileExistsError:
            return
        if self.fsync:
            _fsync_dir(path.parent)

    def _acquire(self, exclusive: bool) -> None:
        if self._closed:
            raise StorageError(f"JSON store {self.directory} is closed")
        if os.getpid() != self._pid:
            # A forked child shares the parent's open file description, and
            # flock would not keep the two apart: take our own.
            inherited = self._lock_fd
            self._lock_fd = os.open(self.directory / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
            self._pid = os.getpid()
            with contextlib.suppress(OSError):
                os.close(inherited)
        mode = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB
        deadline = time.monotonic() + self.lock_timeout
        delay = 0.0002
        while True:
            try:
                fcntl.flock(self._lock_fd, mode)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise StorageError(
                        f"JSON store {self.directory} is busy: another process held its lock "
                        f"for more than {self.lock_timeout:g}s") from None
                time.sleep(delay)
                delay = min(delay * 2, 0.004)

    @contextmanager
    def _locked(self, *, exclusive: bool, init: bool = False) -> Iterator[None]:
        """Hold the store's lock and catch up with other processes. A writer
        first upgrades a store of an older format version."""
        self._acquire(exclusive)
        try:
            try:
                lost_index = self._init_store() if init else False
                self._refresh(exclusive)
                if exclusive and self._version < FORMAT_VERSION:
                    self._upgrade()
                elif lost_index:
                    log.warning("JSON store %s: the %s directory was missing; rebuilding it "
                                "from the job files", self.directory, INDEX_DIR)
                    self._rebuild_index()
                yield
            except OSError as exc:
                self._invalidate()
                raise StorageError(f"JSON store {self.directory}: {exc}") from exc
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _invalidate(self) -> None:
        """Forget what was read: the next operation reloads everything."""
        self._snap_key = None

    def _init_store(self) -> bool:
        """Create what is missing (a new store: its first snapshot). True if
        an existing store has lost its index directory."""
        self._mkdir(self._jobs_dir)
        self._mkdir(self._tmp_dir)
        if self._snapshot_path.exists():
            # (Only a rebuild creates the index of an existing store, so a
            # crash half-way through one leaves it to the next open.)
            return not self._index_dir.is_dir()
        journals = [p.name for p in self.directory.iterdir()
                    if p.name.startswith(JOURNAL_PREFIX)]
        has_jobs = any(any(shard.iterdir()) for shard in self._jobs_dir.iterdir()
                       if shard.is_dir())
        if journals or has_jobs:
            raise StorageError(
                f"JSON store {self.directory} has no {SNAPSHOT} but holds "
                f"{'journal files' if journals else 'job files'}: the snapshot was lost. "
                f"Restore {self._snapshot_path} from a backup; queuectl will not start an "
                "empty queue over the old one")
        self._mkdir(self._index_dir)
        self._write_snapshot(1)
        return False

    def _upgrade(self) -> None:
        """Rewrite a store of an older format version: compaction writes the
        snapshot in the current format (after building the index from the
        job files). Older job files stay as they are; they are read with the
        defaults of the fields they lack. An older queuectl-json refuses the
        store from then on, instead of misreading it."""
        log.info("JSON store %s: upgrading from format version %d to %d", self.directory,
                 self._version, FORMAT_VERSION)
        self._compact()

    # ---------------------------------------------------------- reading
    def _refresh(self, exclusive: bool) -> None:
        try:
            st = os.stat(self._snapshot_path)
        except FileNotFoundError:
            self._invalidate()
            raise StorageError(
                f"JSON store {self.directory}: {SNAPSHOT} is missing. Restore it from a "
                "backup; queuectl will not start an empty queue over the old one") from None
        if (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) != self._snap_key:
            self._load_snapshot()
        self._read_journal(exclusive)

    def _load_snapshot(self) -> None:
        path = self._snapshot_path
        fd = os.open(path, os.O_RDONLY)
        try:
            st = os.fstat(fd)
            doc = _loads(_read_all(fd))
            state = self._parse_snapshot(doc)
            self._check_no_newer_journal(state["generation"])
        except _Damaged as exc:
            os.close(fd)
            self._invalidate()
            raise self._damaged(path, str(exc)) from None
        except BaseException:
            os.close(fd)
            raise
        self._adopt_snapshot(fd, st, state["generation"])
        self._version = state["version"]
        self._next_seq = state["next_seq"]
        self._finished = state["finished"]
        self._settings = state["settings"]
        self._workers = state["workers"]
        self._paused = state["paused"]
        self._jobs = state["jobs"]
        self._unwritten = {}
        self._purged = set()
        self._fresh = {}

    def _adopt_snapshot(self, fd: int, st: os.stat_result, generation: int) -> None:
        """From now on, compare against this snapshot and read its journal."""
        if self._snap_fd is not None:
            os.close(self._snap_fd)
        if self._journal_fd is not None:
            os.close(self._journal_fd)
        self._snap_fd, self._journal_fd = fd, None
        self._snap_key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        self._snap_size = st.st_size
        self._journal_offset = self._journal_lines = 0
        self._generation = generation

    def _parse_snapshot(self, doc: Any) -> dict[str, Any]:
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise _Damaged(f"not a {FORMAT} snapshot (no \"format\": \"{FORMAT}\")")
        version = doc.get("version")
        if not _is_int(version) or version < 1:
            raise _Damaged("no valid format version")
        if version > FORMAT_VERSION:
            raise _Damaged(f"format version {version} is newer than this queuectl-json "
                           f"understands ({FORMAT_VERSION}); upgrade queuectl-json")
        generation, next_seq = doc.get("generation"), doc.get("next_seq")
        if not (_is_int(generation) and generation >= 1 and _is_int(next_seq)):
            raise _Damaged("generation or next_seq is not a whole number")
        finished = doc.get("finished")
        if version == 1:  # one queue, no cancelled jobs, no pauses
            counts = {DEFAULT_QUEUE: _check_counts(finished, V1_FINISHED_STATES)}
            paused: Any = []
        else:
            if not isinstance(finished, dict):
                raise _Damaged("'finished' must map queue names to counts")
            counts = {queue: _check_counts(n, FINISHED_STATES)
                      for queue, n in finished.items()}
            paused = doc.get("paused")
            if not isinstance(paused, list) or not all(isinstance(q, str) for q in paused):
                raise _Damaged("'paused' must be a list of queue names")
        settings = doc.get("settings")
        workers, jobs = doc.get("workers"), doc.get("jobs")
        if not (isinstance(settings, dict) and isinstance(workers, list)
                and isinstance(jobs, list)):
            raise _Damaged("settings, workers or jobs missing")
        job_map: dict[str, Record] = {}
        for rec in jobs:
            if version == 1:
                rec = _upgrade_v1(rec)
            _check_job(rec, ACTIVE_STATES)
            if rec["id"] in job_map:
                raise _Damaged(f"job {rec['id']!r} appears twice")
            job_map[rec["id"]] = rec
        worker_map = {w["id"]: w for w in map(_check_worker, workers)}
        return {"version": version, "generation": generation, "next_seq": next_seq,
                "finished": counts, "paused": set(paused), "settings": settings,
                "workers": worker_map, "jobs": job_map}

    def _check_no_newer_journal(self, generation: int) -> None:
        for entry in os.scandir(self.directory):
            name = entry.name
            if name.startswith(JOURNAL_PREFIX) and name.endswith(JOURNAL_SUFFIX):
                number = name[len(JOURNAL_PREFIX):-len(JOURNAL_SUFFIX)]
                if number.isdigit() and int(number) > generation:
                    raise _Damaged(
                        f"its generation {generation} is older than journal {name}: was "
                        f"{SNAPSHOT} restored from an old backup? Restore the matching "
                        "snapshot")

    def _read_journal(self, exclusive: bool) -> None:
        """Apply the journal lines written since this process last looked."""
        path = self._journal_path(self._generation)
        if self._journal_fd is None:
            try:
                self._journal_fd = os.open(path, os.O_RDWR | os.O_APPEND)
            except FileNotFoundError:
                return  # nothing written since the snapshot
        fd = self._journal_fd
        size = os.fstat(fd).st_size
        offset = self._journal_offset
        if size == offset:
            return
        if size < offset:
            self._invalidate()
            raise self._damaged(path, f"it is shorter ({size} bytes) than what was already "
                                f"read from it ({offset} bytes); it was truncated")
        data = _pread_all(fd, size - offset, offset)
        end = data.rfind(b"\n") + 1
        try:
            for line in data[:end].splitlines():
                self._journal_lines += 1
                tx = _loads(line)
                if not isinstance(tx, dict) or not isinstance(tx.get("ops"), list):
                    raise _Damaged("a journal line must be an object with an 'ops' list")
                for op in tx["ops"]:
                    self._apply(op, check=True)
        except _Damaged as exc:
            self._invalidate()
            raise self._damaged(path, str(exc), self._journal_lines) from None
        self._journal_offset = offset + end
        if end < len(data) and exclusive:
            self._drop_torn_tail(path, data[end:])

    def _drop_torn_tail(self, path: Path, tail: bytes) -> None:
        """A last line without its newline was never acknowledged: its
        writer died while appending it (every append happens under the
        exclusive lock, which we now hold). Keep its bytes in a side file
        and cut it off, so that the next line starts on a line of its own."""
        assert self._journal_fd is not None
        keep = path.with_name(f"{path.name}.torn-{self._journal_offset}-{secrets.token_hex(4)}")
        log.warning("%s: ignoring an unfinished last line (%d bytes) left by a process that "
                    "died while writing it; its bytes are kept in %s", path, len(tail), keep)
        fd = os.open(keep, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            _write_all(fd, tail)
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.ftruncate(self._journal_fd, self._journal_offset)
        if self.fsync:
            os.fsync(self._journal_fd)
            _fsync_dir(self.directory)

    def _apply(self, op: Any, *, check: bool) -> None:
        """Apply one journal operation to the in-memory state. Every
        operation is idempotent; ``check`` validates what it produces (for
        lines written by others)."""
        try:
            self._apply_op(op, check)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise _Damaged(f"malformed operation ({type(exc).__name__}: {exc})") from None

    def _count(self, queue: str, state: str, delta: int) -> None:
        per = self._finished.get(queue)
        if per is None:
            per = self._finished[queue] = dict.fromkeys(FINISHED_ORDER, 0)
        per[state] += delta

    def _apply_op(self, op: Any, check: bool) -> None:
        if not isinstance(op, dict):
            raise _Damaged("an operation is not a JSON object")
        kind = op.get("op")
        v1 = self._version < 2  # a journal written by format 1
        if kind == "enqueue":
            for rec in op["jobs"]:
                if v1:
                    rec = _upgrade_v1(rec)
                if check:
                    _check_job(rec, ACTIVE_STATES)
                self._jobs[rec["id"]] = rec
                self._purged.discard(rec["id"])
                self._next_seq = max(self._next_seq, rec["seq"] + 1)
        elif kind == "set":
            job_id = op["id"]
            rec = self._jobs.get(job_id)
            if rec is None:
                raise _Damaged(f"it changes job {job_id!r}, which is not active")
            new = _merged(rec, op["fields"], op.get("attempt"))
            if v1:
                new = _upgrade_v1(new)
            if check:
                _check_job(new, ACTIVE_STATES)
            self._jobs[job_id] = new
        elif kind == "finish":
            state = op["state"]
            if state not in FINISHED_STATES:
                raise _Damaged(f"a job cannot finish as {state!r}")
            key = op.get("key")
            if not v1 and not _is_int(key):
                raise _Damaged("a 'finish' operation needs the whole-number 'key'")
            rec = self._jobs.pop(op["id"], None)
            if rec is not None:
                self._count(rec["queue"], state, 1)
                if _is_int(key):
                    self._fresh[rec["id"]] = (key, rec["seq"], state)
        elif kind == "revive":
            rec = op["job"]
            if v1:
                rec = _upgrade_v1(rec)
            if check:
                _check_job(rec, ACTIVE_STATES)
            if rec["id"] not in self._jobs:
                self._jobs[rec["id"]] = rec
                self._unwritten.pop(rec["id"], None)
                self._fresh.pop(rec["id"], None)
                self._count(rec["queue"], "dead", -1)
                self._next_seq = max(self._next_seq, rec["seq"] + 1)
        elif kind == "import":
            records = op["jobs"]
            if not isinstance(records, list):
                raise _Damaged("an 'import' operation has no 'jobs' list")
            if v1:
                records = [_upgrade_v1(rec) for rec in records]
            if check:
                ids: set[str] = set()
                for rec in records:
                    _check_job(rec, IMPORTABLE_STATES)
                    if rec["id"] in ids:
                        raise _Damaged(f"job {rec['id']!r} is imported twice")
                    ids.add(rec["id"])
            for rec in records:
                job_id = rec["id"]
                self._purged.discard(job_id)
                if rec["state"] in FINISHED_STATES:
                    old = self._unwritten.get(job_id)
                    if old is not None:  # applied again: count it once
                        self._count(old["queue"], old["state"], -1)
                    self._unwritten[job_id] = rec
                    self._count(rec["queue"], rec["state"], 1)
                    if not v1:
                        self._fresh[job_id] = (_finish_key(rec), rec["seq"], rec["state"])
                else:
                    self._jobs[job_id] = rec
                self._next_seq = max(self._next_seq, rec["seq"] + 1)
        elif kind == "imported":
            done = op["ids"]
            if not isinstance(done, list) or not all(isinstance(i, str) for i in done):
                raise _Damaged("an 'imported' operation needs an 'ids' list of text")
            for job_id in done:
                self._unwritten.pop(job_id, None)
        elif kind == "purge" and not v1:
            gone = op["jobs"]
            if not isinstance(gone, list):
                raise _Damaged("a 'purge' operation has no 'jobs' list")
            for item in gone:
                job_id, state, queue = item["id"], item["state"], item["queue"]
                if not (isinstance(job_id, str) and isinstance(queue, str)
                        and state in FINISHED_STATES):
                    raise _Damaged("a purged job needs a text id and queue and a finished "
                                   "state")
                if job_id in self._jobs:
                    raise _Damaged(f"it purges job {job_id!r}, which is active")
                if job_id in self._purged:
                    continue
                self._purged.add(job_id)
                self._unwritten.pop(job_id, None)
                self._fresh.pop(job_id, None)
                self._count(queue, state, -1)
        elif kind == "pause" and not v1:
            queue, paused = op["queue"], op["paused"]
            if not isinstance(queue, str) or not isinstance(paused, bool):
                raise _Damaged("a 'pause' operation needs a text queue and true or false")
            if paused:
                self._paused.add(queue)
            else:
                self._paused.discard(queue)
        elif kind == "setting":
            if not isinstance(op["key"], str):
                raise _Damaged("a setting key is not text")
            self._settings[op["key"]] = op["value"]
        elif kind == "worker":
            worker = _check_worker(op["worker"]) if check else op["worker"]
            self._workers[worker["id"]] = worker
        elif kind == "heartbeat":
            current = self._workers.get(op["id"])
            if current is not None:
                new = {**current, "heartbeat_at": op["heartbeat_at"],
                       "current_job": op["current_job"], "job_pgid": op["job_pgid"]}
                self._workers[op["id"]] = _check_worker(new) if check else new
        elif kind == "unregister":
            for worker_id in op["ids"]:
                self._workers.pop(worker_id, None)
        else:
            raise _Damaged(f"unknown operation {kind!r}")

    def _read_finished(self, job_id: str) -> Record | None:
        path = self._job_path(job_id)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        return self._parse_finished(path, data)

    def _parse_finished(self, path: Path, data: bytes) -> Record:
        try:
            rec = _loads(data)
            if isinstance(rec, dict) and not any(k in rec for k in _V2_JOB_FIELDS):
                rec = _upgrade_v1(rec)  # written by format 1
            rec = _check_job(rec, FINISHED_STATES)
            if job_file_name(rec["id"]) != path.name or path.parent.name != path.name[:2]:
                raise _Damaged(f"it holds job {rec['id']!r}, whose file is "
                               f"{JOBS_DIR}/{job_file_name(rec['id'])[:2]}/"
                               f"{job_file_name(rec['id'])}")
        except _Damaged as exc:
            raise self._damaged(path, str(exc)) from None
        return rec

    def _finished_files(self, *, skip_damaged: bool = False) -> Iterator[Record]:
        """Every finished job file (no lock needed: each is replaced whole).
        A damaged file raises StorageError, or with ``skip_damaged`` is
        logged and skipped."""
        try:
            shards = sorted(e.path for e in os.scandir(self._jobs_dir) if e.is_dir())
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
                    rec = self._parse_finished(path, data)
                except StorageError as exc:
                    if not skip_damaged:
                        raise
                    log.warning("%s", exc)
                    continue
                yield rec

    def _finished_record(self, job_id: str) -> Record | None:
        """A finished job's record (imported and not yet in a file, or its
        file); None if the job is active, purged or unknown."""
        if job_id in self._jobs or job_id in self._purged:
            return None
        return self._unwritten.get(job_id) or self._read_finished(job_id)

    def _index_files(self, state: str) -> list[tuple[int, Path]]:
        """The index files of one state: (bucket start, path)."""
        try:
            entries = list(os.scandir(self._index_dir / state))
        except FileNotFoundError:
            return []
        return [(int(e.name[:-len(".jsonl")]), Path(e.path)) for e in entries
                if _INDEX_NAME.fullmatch(e.name)]

    def _read_index(self, path: Path) -> list[tuple[int, int, str]]:
        """The entries ``[finish key, seq, id]`` of one index file. A last
        line without its newline (a crash while appending) is ignored."""
        data = path.read_bytes()
        entries = []
        for number, line in enumerate(data[:data.rfind(b"\n") + 1].splitlines(), start=1):
            try:
                entry = _loads(line)
                if not (isinstance(entry, list) and len(entry) == 3 and _is_int(entry[0])
                        and _is_int(entry[1]) and isinstance(entry[2], str)):
                    raise _Damaged("an index entry must be [finish time, seq, job id]")
            except _Damaged as exc:
                raise self._damaged(path, str(exc), number, advice=_INDEX_ADVICE) from None
            entries.append((entry[0], entry[1], entry[2]))
        return entries

    # ---------------------------------------------------------- writing
    def _commit(self, ops: list[Record], *, compact: bool = True) -> None:
        """Append one journal line (the commit point), then apply it here."""
        line = _dumps({"ops": ops}) + b"\n"
        if self._journal_fd is None:
            path = self._journal_path(self._generation)
            self._journal_fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
            if self.fsync:
                _fsync_dir(self.directory)
        fd = self._journal_fd
        start = self._journal_offset
        try:
            _write_all(fd, line)
            if self.fsync:
                os.fdatasync(fd)
        except BaseException:
            # Not acknowledged: take it back so that nobody applies it.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, start)
            self._invalidate()
            raise
        self._journal_offset = start + len(line)
        self._journal_lines += 1
        try:
            for op in ops:
                self._apply(op, check=False)
        except BaseException:
            self._invalidate()
            raise
        if compact:
            self._maybe_compact()

    def _maybe_compact(self) -> None:
        if self._journal_offset > max(self.compact_bytes, self._snap_size):
            try:
                self._compact()
            except OSError as exc:
                # The change is committed; compaction is tried again later.
                self._invalidate()
                log.warning("JSON store %s: compaction failed: %s", self.directory, exc)

    def _atomic_write(self, path: Path, data: bytes, *, sync_dir: bool = True) -> None:
        tmp = self._tmp_dir / f"{os.getpid()}-{secrets.token_hex(8)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            try:
                _write_all(fd, data)
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
            _fsync_dir(path.parent)

    def _write_finished(self, rec: Record) -> None:
        """Write a finished job's file before the line that commits it."""
        self._write_finished_many([rec])

    def _write_finished_many(self, records: Iterable[Record]) -> None:
        """Write finished jobs' files (each atomically), then make their
        directory entries durable: one ``fsync`` per shard, not per file."""
        shards: set[Path] = set()
        for rec in records:
            path = self._job_path(rec["id"])
            if path.parent.name not in self._shards:
                self._mkdir(path.parent)
                self._shards.add(path.parent.name)
            doc = {k: v for k, v in rec.items() if k != "claim_token"}
            self._atomic_write(path, _dumps(doc) + b"\n", sync_dir=False)
            shards.add(path.parent)
        if self.fsync:
            for shard in sorted(shards):
                _fsync_dir(shard)

    def _remove_finished(self, job_ids: Iterable[str]) -> None:
        """Remove the files of jobs that a committed line took away (purged
        jobs); missing files are fine."""
        shards: set[Path] = set()
        for job_id in job_ids:
            path = self._job_path(job_id)
            try:
                os.unlink(path)
            except FileNotFoundError:
                continue
            shards.add(path.parent)
        if self.fsync:
            for shard in sorted(shards):
                _fsync_dir(shard)

    def _settle_imports(self) -> None:
        """Write the files of the imported finished jobs still kept in
        memory, then commit the ``imported`` line that drops them from it.
        Under the exclusive lock, with the state up to date."""
        records = list(self._unwritten.values())
        if records:
            self._write_finished_many(records)
            self._commit([{"op": "imported", "ids": [r["id"] for r in records]}])

    def _append_index(self, fresh: dict[str, tuple[int, int, str]]) -> None:
        """Append entries to the index files (each sorted batch at the end of
        its file), durably: called before the snapshot that forgets the
        journal they come from."""
        groups: dict[tuple[str, int], list[tuple[int, int, str]]] = defaultdict(list)
        for job_id, (key, seq, state) in fresh.items():
            groups[(state, _bucket(key))].append((key, seq, job_id))
        new_files: set[Path] = set()
        for (state, start), entries in sorted(groups.items()):
            self._mkdir(self._index_dir / state)
            path = self._index_dir / state / f"{start}.jsonl"
            data = b"".join(_dumps(list(e)) + b"\n" for e in sorted(entries))
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                size = os.fstat(fd).st_size
                if size == 0:
                    new_files.add(path.parent)
                elif os.pread(fd, 1, size - 1) != b"\n":
                    # A crash while appending: cut the unfinished line off.
                    whole = _pread_all(fd, size, 0)
                    os.ftruncate(fd, whole.rfind(b"\n") + 1)
                _write_all(fd, data)
                if self.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
        if self.fsync:
            for directory in sorted(new_files):
                _fsync_dir(directory)

    def _rebuild_index(self) -> None:
        """Write the index afresh from the job files (a store of format 1,
        or one whose index was removed). Built aside, then swapped in; a
        crash before the swap leaves the old index (or none, which the next
        open rebuilds). Jobs that finished since the snapshot are left to the
        next compaction, like every fresh entry. A damaged job file is left
        out (and logged): it is reported whenever it is read, but it must not
        keep the store from opening."""
        groups: dict[tuple[str, int], list[tuple[int, int, str]]] = defaultdict(list)
        for rec in self._finished_files(skip_damaged=True):
            job_id = rec["id"]
            if job_id in self._jobs or job_id in self._purged or job_id in self._fresh:
                continue
            key = _finish_key(rec)
            groups[(rec["state"], _bucket(key))].append((key, rec["seq"], job_id))
        new = self._tmp_dir / f"index-{secrets.token_hex(8)}"
        self._mkdir(new)
        for state in FINISHED_ORDER:
            self._mkdir(new / state)
        for (state, start), entries in groups.items():
            data = b"".join(_dumps(list(e)) + b"\n" for e in sorted(entries))
            self._atomic_write(new / state / f"{start}.jsonl", data, sync_dir=False)
        if self.fsync:
            for state in FINISHED_ORDER:
                _fsync_dir(new / state)
        old = self._tmp_dir / f"index-old-{secrets.token_hex(8)}"
        with contextlib.suppress(FileNotFoundError):
            os.rename(self._index_dir, old)
        os.rename(new, self._index_dir)
        if self.fsync:
            _fsync_dir(self._tmp_dir)
            _fsync_dir(self.directory)
        shutil.rmtree(old, ignore_errors=True)

    def _snapshot_bytes(self, generation: int) -> bytes:
        """One JSON document, laid out one job per line for people."""
        finished = {queue: counts for queue, counts in sorted(self._finished.items())
                    if any(counts.values())}
        head = _dumps({"format": FORMAT, "version": FORMAT_VERSION, "generation": generation,
                       "next_seq": self._next_seq, "finished": finished,
                       "paused": sorted(self._paused), "settings": self._settings})
        workers = sorted(self._workers.values(), key=lambda w: (w["started_at"], w["id"]))
        jobs = sorted(self._jobs.values(), key=lambda r: r["seq"])
        parts = [head[:-1], b',\n"workers":[']
        parts.append(b",".join(_dumps(w) for w in workers))
        parts.append(b'],\n"jobs":[\n')
        parts.append(b",\n".join(_dumps(r) for r in jobs))
        parts.append(b"\n]}\n")
        return b"".join(parts)

    def _write_snapshot(self, generation: int) -> None:
        self._atomic_write(self._snapshot_path, self._snapshot_bytes(generation))

    def compact(self) -> None:
        """Fold the journal into a new snapshot now (it also happens on its
        own when the journal grows past ``compact_bytes``)."""
        with self._locked(exclusive=True):
            self._compact()

    def _compact(self) -> None:
        """Write snapshot G+1 (atomically: it is the commit point), then
        remove the journal of G and leftovers. Called under the exclusive
        lock with the state up to date. The new snapshot forgets the journal,
        so first everything the journal alone stood for is put in files:
        purged jobs' files are removed (a crash may have left some), imported
        jobs' files are written, and the jobs that finished since the last
        snapshot go into the index (for a store of an older format, or one
        whose index was removed, the index is built)."""
        generation = self._generation + 1
        self._remove_finished(self._purged)
        self._write_finished_many(self._unwritten.values())
        if self._version < FORMAT_VERSION or not self._index_dir.is_dir():
            self._rebuild_index()
        self._append_index(self._fresh)
        self._write_snapshot(generation)
        self._unwritten = {}
        self._purged = set()
        self._fresh = {}
        self._version = FORMAT_VERSION
        for entry in os.scandir(self.directory):
            name = entry.name
            if name.startswith(JOURNAL_PREFIX) and name.endswith(JOURNAL_SUFFIX):
                number = name[len(JOURNAL_PREFIX):-len(JOURNAL_SUFFIX)]
                if number.isdigit() and int(number) < generation:
                    os.unlink(entry.path)
        # Temporary files are only written under the exclusive lock that we
        # hold: any left over belongs to a process that died.
        for entry in os.scandir(self._tmp_dir):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
        # The state in memory is what was just written: only adopt the file.
        fd = os.open(self._snapshot_path, os.O_RDONLY)
        self._adopt_snapshot(fd, os.fstat(fd), generation)

    # ---------------------------------------------------------- jobs
    def enqueue(self, jobs: Sequence[NewJob]) -> None:
        seen: set[str] = set()
        for job in jobs:
            if job.id in seen:
                raise DuplicateJobError(job.id)
            seen.add(job.id)
        if not jobs:
            return
        with self._locked(exclusive=True):
            for job in jobs:
                if self._exists(job.id):
                    raise DuplicateJobError(job.id)
            records = []
            for seq, job in enumerate(jobs, start=self._next_seq):
                records.append({
                    "id": job.id, "command": job.command, "state": "pending", "attempts": 0,
                    "max_retries": job.max_retries, "priority": job.priority,
                    "run_at": job.run_at, "created_at": job.created_at,
                    "updated_at": job.created_at, "started_at": None, "finished_at": None,
                    "worker_id": None, "lease_expires_at": None, "last_error": None,
                    "exit_code": None, "queue": job.queue,
                    "timeout": None if job.timeout is None else float(job.timeout),
                    "cwd": job.cwd, "env": None if job.env is None else dict(job.env),
                    "retry": None if job.retry is None else dict(job.retry),
                    "cancel_requested_at": None,
                    "seq": seq, "claim_token": None, "history": [],
                })
                try:
                    # What is written must read back: a record that the
                    # checks on reading would refuse is refused here.
                    _check_job(records[-1], ACTIVE_STATES)
                except _Damaged as exc:
                    raise StorageError(f"cannot enqueue {exc}") from None
            self._commit([{"op": "enqueue", "jobs": records}])

    def import_jobs(self, records: Sequence[tuple[Job, Sequence[Attempt]]]) -> None:
        seen: set[str] = set()
        for job, _ in records:
            if job.id in seen:
                raise DuplicateJobError(job.id)
            seen.add(job.id)
            if job.state.value not in IMPORTABLE_STATES:
                raise InvalidStateError(f"job {job.id!r} is {job.state.value}; a job cannot be "
                                        "imported while it is processing")
        if not records:
            return
        with self._locked(exclusive=True):
            for job, _ in records:
                if self._exists(job.id):
                    raise DuplicateJobError(job.id)
            new = []
            for seq, (job, history) in enumerate(records, start=self._next_seq):
                rec = job.as_dict()
                rec["state"] = job.state.value
                for key in ("env", "retry"):
                    if rec[key] is not None:
                        rec[key] = dict(rec[key])
                rec.update(seq=seq, claim_token=None, history=[
                    {k: v for k, v in a.as_dict().items() if k != "job_id"} for a in history])
                try:
                    new.append(_check_job(rec, IMPORTABLE_STATES))
                except _Damaged as exc:
                    raise StorageError(f"cannot import {exc}") from None
            # One line commits every job, finished ones included: they are
            # kept in memory (and read like files) until their files exist.
            self._commit([{"op": "import", "jobs": new}])
            try:
                self._settle_imports()
            except OSError as exc:
                # The import is committed and visible. Its files are written
                # by the next import or compaction.
                self._invalidate()
                log.warning("JSON store %s: imported jobs are committed, but writing their "
                            "files failed (tried again later): %s", self.directory, exc)

    def _exists(self, job_id: str) -> bool:
        """Whether a job with that id is stored (duplicate checks)."""
        return (job_id in self._jobs or job_id in self._unwritten
                or (job_id not in self._purged and self._job_path(job_id).exists()))

    def _lookup(self, job_id: str) -> Record | None:
        """A job's record: active, imported but not yet in a file, or its file."""
        return self._jobs.get(job_id) or self._finished_record(job_id)

    def get(self, job_id: str) -> Job | None:
        with self._locked(exclusive=False):
            rec = self._lookup(job_id)
        return None if rec is None else _to_job(rec)

    def attempts(self, job_id: str) -> list[Attempt]:
        with self._locked(exclusive=False):
            rec = self._lookup(job_id)
        return [] if rec is None else _to_attempts(rec)

    def list_jobs(self, state: JobState | None = None, limit: int | None = None, *,
                  queue: str | None = None) -> list[Job]:
        wanted = None if state is None else JobState(state).value

        def keep(rec: Record) -> bool:
            return ((wanted is None or rec["state"] == wanted)
                    and (queue is None or rec["queue"] == queue))

        with self._locked(exclusive=False):
            before = {**self._jobs, **self._unwritten}
            purged = set(self._purged)
        records = [r for r in before.values() if keep(r)]
        if wanted is None or wanted in FINISHED_STATES:
            # Finished jobs are read without holding the lock (a long listing
            # must not stall the workers). Each file is replaced whole, and
            # the active set (and imported jobs not yet in files) taken above
            # wins over a file, so every job is listed once, as it was at
            # some moment during the call. Files of purged jobs that a crash
            # left behind are not jobs.
            listed = set(before)
            try:
                for rec in self._finished_files():
                    if rec["id"] not in listed and rec["id"] not in purged:
                        listed.add(rec["id"])
                        if keep(rec):
                            records.append(rec)
            except OSError as exc:
                raise StorageError(f"JSON store {self.directory}: {exc}") from exc
            with self._locked(exclusive=False):
                # Jobs that became active meanwhile (dlq retry) whose file
                # was removed before we got to it, or were imported meanwhile.
                after = {**self._jobs, **self._unwritten}
                records.extend(r for i, r in after.items() if i not in listed and keep(r))
        records.sort(key=lambda r: r["seq"])
        if limit is not None:
            records = records[:limit]
        return [_to_job(r) for r in records]

    def counts(self, queue: str | None = None) -> dict[JobState, int]:
        with self._locked(exclusive=False):
            counts = dict.fromkeys(JobState, 0)
            for rec in self._jobs.values():
                if queue is None or rec["queue"] == queue:
                    counts[JobState(rec["state"])] += 1
            for name, per_state in self._finished.items():
                if queue is None or name == queue:
                    for state, n in per_state.items():
                        counts[JobState(state)] += n
        return counts

    def _claimable(self, queues: Sequence[str] | None) -> Iterator[Record]:
        """Jobs a claim from ``queues`` could take once due. Under the lock."""
        allowed = None if queues is None else set(queues)
        paused = self._paused
        for rec in self._jobs.values():
            if rec["state"] in CLAIMABLE_STATES:
                name = rec["queue"]
                if name not in paused and (allowed is None or name in allowed):
                    yield rec

    def next_run_at(self, queues: Sequence[str] | None = None) -> int | None:
        with self._locked(exclusive=False):
            due = [r["run_at"] for r in self._claimable(queues)]
        return min(due) if due else None

    # ---------------------------------------------------------- claims
    def claim(self, worker_id: str, now: int, lease_ms: int,
              queues: Sequence[str] | None = None) -> Claim | None:
        with self._locked(exclusive=True):
            best: Record | None = None
            best_key: tuple[int, int, int] | None = None
            for rec in self._claimable(queues):
                if rec["run_at"] <= now:
                    key = _claim_key(rec)
                    if best_key is None or key < best_key:
                        best, best_key = rec, key
            if best is None:
                return None
            token = uuid.uuid4().hex
            # The attempt's place in the whole history; ``attempts`` is the
            # retry count (reset by dlq retry, given back by forced stops).
            number = len(best["history"]) + 1
            lease = now + lease_ms
            self._commit([{
                "op": "set", "id": best["id"],
                "fields": {"state": "processing", "attempts": best["attempts"] + 1,
                           "worker_id": worker_id, "claim_token": token,
                           "lease_expires_at": lease, "started_at": now, "finished_at": None,
                           "updated_at": now},
                "attempt": {"index": len(best["history"]),
                            "set": _open_attempt(number, worker_id, now)},
            }])
            job = _to_job(self._jobs[best["id"]])
        return Claim(job=job, token=token, worker_id=worker_id, attempt=number,
                     lease_expires_at=lease)

    def _held(self, claim: Claim) -> Record | None:
        rec = self._jobs.get(claim.job.id)
        if rec is None or rec["state"] != "processing" or rec["claim_token"] != claim.token:
            return None
        return rec

    def renew(self, claim: Claim, now: int, lease_ms: int) -> bool:
        with self._locked(exclusive=True):
            rec = self._held(claim)
            if rec is None:
                return False
            self._commit([{"op": "set", "id": rec["id"],
                           "fields": {"lease_expires_at": now + lease_ms}}])
            return True

    def _finish_ops(self, final: Record) -> list[Record]:
        """A job that ends ``completed``, ``dead`` or ``cancelled``: its file
        is written first, then the returned operation (once committed) takes
        it out of the active set."""
        self._write_finished(final)
        return [{"op": "finish", "id": final["id"], "state": final["state"],
                 "key": _finish_key(final)}]

    def _close(self, rec: Record, fields: Record, attempt_change: Record) -> tuple[
            Record, list[Record]]:
        """The operations that close ``rec``'s open attempt and apply
        ``fields``; a job that finishes is written to its own file first and
        leaves the active set."""
        attempt = {"index": len(rec["history"]) - 1, "set": attempt_change}
        final = _merged(rec, fields, attempt)
        if final["state"] in FINISHED_STATES:
            return final, self._finish_ops(final)
        return final, [{"op": "set", "id": rec["id"], "fields": fields, "attempt": attempt}]

    def _finish(self, claim: Claim, result: ExecResult, now: int, state: JobState,
                retry_at: int | None, outcome: str) -> Job | None:
        with self._locked(exclusive=True):
            rec = self._held(claim)
            if rec is None:
                return None
            new_state = state.value
            if state is not JobState.COMPLETED and rec["cancel_requested_at"] is not None:
                # Cancellation wins over a retry and over the DLQ.
                new_state, retry_at, outcome = "cancelled", None, "cancelled"
            fields = {
                "state": new_state,
                "run_at": rec["run_at"] if retry_at is None else retry_at,
                "last_error": None if new_state == "completed" else result.error,
                "exit_code": result.exit_code, "finished_at": now, "updated_at": now,
                "lease_expires_at": None, "claim_token": None,
            }
            final, ops = self._close(rec, fields, {
                "finished_at": now, "outcome": outcome, "exit_code": result.exit_code,
                "signal": result.signal, "error": result.error,
                "stdout_tail": result.stdout_tail, "stderr_tail": result.stderr_tail})
            self._commit(ops)
        return _to_job(final)

    def complete(self, claim: Claim, result: ExecResult, now: int) -> Job | None:
        return self._finish(claim, result, now, JobState.COMPLETED, None, "completed")

    def fail(self, claim: Claim, result: ExecResult, now: int, retry_at: int | None
             ) -> Job | None:
        state = JobState.FAILED if retry_at is not None else JobState.DEAD
        return self._finish(claim, result, now, state, retry_at, "failed")

    def recover_expired(self, now: int, worker_id: str | None = None, *,
                        charge_attempt: bool = True) -> list[Job]:
        with self._locked(exclusive=True):
            # With a worker: only (all of) its jobs; without: expired leases.
            stale = sorted(
                (r for r in self._jobs.values() if r["state"] == "processing" and (
                    r["lease_expires_at"] < now if worker_id is None
                    else r["worker_id"] == worker_id)),
                key=lambda r: r["seq"])
            if not stale:
                return []
            ops: list[Record] = []
            recovered: list[Record] = []
            for rec in stale:
                attempts = rec["attempts"]
                if charge_attempt:
                    error, outcome = LOST_ATTEMPT_ERROR.format(worker=rec["worker_id"]), "lost"
                    state = "dead" if attempts > rec["max_retries"] else "failed"
                else:
                    error = INTERRUPTED_ATTEMPT_ERROR.format(worker=rec["worker_id"])
                    outcome = "interrupted"
                    attempts -= 1
                    state = "pending" if attempts == 0 else "failed"
                if rec["cancel_requested_at"] is not None:
                    state, outcome = "cancelled", "cancelled"
                fields = {"state": state, "attempts": attempts, "run_at": now,
                          "last_error": error, "exit_code": None, "finished_at": now,
                          "updated_at": now, "lease_expires_at": None, "claim_token": None}
                final, more = self._close(rec, fields, {
                    "finished_at": now, "outcome": outcome, "error": error})
                ops.extend(more)
                recovered.append(final)
            self._commit(ops)
        return [_to_job(r) for r in recovered]

    def cancel(self, job_id: str, now: int) -> Job:
        with self._locked(exclusive=True):
            rec = self._jobs.get(job_id)
            if rec is None:
                done = self._finished_record(job_id)
                if done is None:
                    raise JobNotFoundError(job_id)
                raise InvalidStateError(f"job {job_id!r} is {done['state']} already")
            if rec["state"] == "processing":
                # Its worker stops it; fail() or recovery then cancels it.
                if rec["cancel_requested_at"] is None:
                    self._commit([{"op": "set", "id": job_id, "fields": {
                        "cancel_requested_at": now, "updated_at": now}}])
                    rec = self._jobs[job_id]
                return _to_job(rec)
            final = _merged(rec, {"state": "cancelled", "finished_at": now, "updated_at": now,
                                  "last_error": CANCELLED_ERROR, "cancel_requested_at": now,
                                  "claim_token": None}, None)
            self._commit(self._finish_ops(final))
        return _to_job(final)

    def purge(self, *, states: Sequence[JobState], finished_before: int | None = None,
              ids: Sequence[str] | None = None, limit: int | None = None) -> list[str]:
        wanted: set[str] = set()
        for state in states:
            value = JobState(state).value
            if value not in FINISHED_STATES:
                raise ValueError("only completed, dead and cancelled jobs can be purged, "
                                 f"not {value}")
            wanted.add(value)
        if not wanted or (ids is not None and not ids) or (limit is not None and limit <= 0):
            return []
        with self._locked(exclusive=True):
            index: list[_IndexFile] = []
            if ids is not None:
                chosen = self._purge_by_id(ids, wanted, finished_before, limit)
            else:
                chosen, index = self._purge_from_index(wanted, finished_before, limit)
            if chosen:
                # The commit point. Later steps only tidy up: files of purged
                # jobs are hidden until the next snapshot, which removes any
                # left behind first, and the index is a hint.
                self._commit([{"op": "purge", "jobs": [
                    {"id": job.id, "state": job.state, "queue": job.queue} for job in chosen]}],
                    compact=False)
            try:
                self._remove_finished(job.id for job in chosen)
                self._prune_index(index)
            except OSError as exc:
                log.warning("JSON store %s: purged %d job(s), but removing their files "
                            "failed (tried again later): %s", self.directory, len(chosen), exc)
            self._maybe_compact()
        return [job.id for job in chosen]

    def _purgeable(self, job_id: str) -> _Finished | None:
        """What a purge needs to know of a finished job (not its whole
        record: a purge may go through many); None if it is not finished."""
        rec = self._finished_record(job_id)
        if rec is None:
            return None
        return _Finished(job_id, rec["state"], rec["queue"], _finish_key(rec), rec["seq"])

    def _purge_by_id(self, ids: Sequence[str], wanted: set[str], before: int | None,
                     limit: int | None) -> list[_Finished]:
        found = []
        for job_id in dict.fromkeys(ids):
            job = self._purgeable(job_id)
            if job is not None and job.state in wanted and (before is None or job.key < before):
                found.append(job)
        found.sort(key=lambda job: (job.key, job.seq))
        return found if limit is None else found[:limit]

    def _purge_from_index(self, wanted: set[str], before: int | None, limit: int | None
                          ) -> tuple[list[_Finished], list[_IndexFile]]:
        """The oldest finished jobs in ``wanted`` states (and finished before
        ``before``), at most ``limit``, found through the index and the jobs
        that finished since the snapshot, one hour-bucket at a time from the
        oldest: each entry is checked against the job's record, and the
        search stops as soon as ``limit`` are found (later buckets hold only
        later jobs). Also returns the index files read, with the lines to
        drop."""
        files: dict[int, list[tuple[str, Path]]] = defaultdict(list)
        for state in sorted(wanted):
            for start, path in self._index_files(state):
                if before is None or start < before:
                    files[start].append((state, path))
        fresh: dict[int, list[tuple[int, int, str, str, _IndexFile | None, int]]] = (
            defaultdict(list))
        for job_id, (key, seq, state) in self._fresh.items():
            if state in wanted and (before is None or key < before):
                fresh[_bucket(key)].append((key, seq, job_id, state, None, 0))
        chosen: list[_Finished] = []
        chosen_ids: set[str] = set()
        known: dict[str, _Finished | None] = {}
        read: list[_IndexFile] = []
        for start in sorted(files.keys() | fresh.keys()):
            entries = fresh.get(start, [])
            for state, path in files.get(start, []):
                indexed = _IndexFile(path, self._read_index(path))
                read.append(indexed)
                entries.extend((key, seq, job_id, state, indexed, line)
                               for line, (key, seq, job_id) in enumerate(indexed.entries))
            entries.sort(key=lambda e: (e[0], e[1]))
            for key, seq, job_id, state, index, line in entries:
                if before is not None and key >= before:
                    break
                if job_id not in known:
                    known[job_id] = self._purgeable(job_id)
                job = known[job_id]
                if index is not None:
                    index.drop.add(line)  # purged now, or out of date
                if (job is not None and job_id not in chosen_ids
                        and (job.state, job.key, job.seq) == (state, key, seq)):
                    chosen.append(job)
                    chosen_ids.add(job_id)
                    if limit is not None and len(chosen) >= limit:
                        break
            if limit is not None and len(chosen) >= limit:
                break
        return chosen, read

    def _prune_index(self, files: list[_IndexFile]) -> None:
        """Rewrite index files without the lines a purge dropped (purged
        jobs, and entries that no longer match their job); an emptied file
        is removed. Only after the purge is committed."""
        for index in files:
            if not index.drop:
                continue
            keep = [e for line, e in enumerate(index.entries) if line not in index.drop]
            if keep:
                data = b"".join(_dumps(list(e)) + b"\n" for e in sorted(keep))
                self._atomic_write(index.path, data, sync_dir=False)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(index.path)

    def set_queue_paused(self, queue: str, paused: bool) -> bool:
        if not isinstance(queue, str):
            raise TypeError(f"a queue name is text, not {type(queue).__name__}")
        with self._locked(exclusive=True):
            if (queue in self._paused) == bool(paused):
                return False
            self._commit([{"op": "pause", "queue": queue, "paused": bool(paused)}])
            return True

    def paused_queues(self) -> list[str]:
        with self._locked(exclusive=False):
            return sorted(self._paused)

    def dlq_retry(self, job_id: str, now: int) -> Job:
        with self._locked(exclusive=True):
            active = self._jobs.get(job_id)
            rec = active or self._lookup(job_id)
            if rec is None:
                raise JobNotFoundError(job_id)
            if active is not None or rec["state"] != "dead":
                raise InvalidStateError(
                    f"job {job_id!r} is {rec['state']}, not dead; only jobs in the DLQ can "
                    "be retried")
            revived = {**rec, "state": "pending", "attempts": 0, "run_at": now,
                       "updated_at": now, "started_at": None, "finished_at": None,
                       "exit_code": None, "claim_token": None}
            # One journal line moves it back (the commit point); the file
            # is removed after, and an active record always wins over a
            # file, so a crash in between changes nothing.
            self._commit([{"op": "revive", "job": revived}])
            path = self._job_path(job_id)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        return _to_job(revived)

    # ---------------------------------------------------------- settings
    def get_settings(self) -> dict[str, Any]:
        with self._locked(exclusive=False):
            return json.loads(json.dumps(self._settings))  # type: ignore[no-any-return]

    def set_setting(self, key: str, value: Any) -> None:
        try:
            _dumps(value)
        except (TypeError, ValueError) as exc:
            raise StorageError(f"setting {key!r}: value is not JSON-serialisable: {exc}"
                               ) from None
        with self._locked(exclusive=True):
            self._commit([{"op": "setting", "key": key, "value": value}])

    # ---------------------------------------------------------- workers
    def register_worker(self, worker: WorkerInfo) -> None:
        with self._locked(exclusive=True):
            self._commit([{"op": "worker", "worker": worker.as_dict()}])

    def worker_heartbeat(self, worker_id: str, now: int, current_job: str | None,
                         job_pgid: int | None) -> None:
        with self._locked(exclusive=True):
            if worker_id in self._workers:
                self._commit([{"op": "heartbeat", "id": worker_id, "heartbeat_at": now,
                               "current_job": current_job, "job_pgid": job_pgid}])

    def unregister_worker(self, worker_id: str) -> None:
        with self._locked(exclusive=True):
            if worker_id in self._workers:
                self._commit([{"op": "unregister", "ids": [worker_id]}])

    def list_workers(self) -> list[WorkerInfo]:
        with self._locked(exclusive=False):
            workers = sorted(self._workers.values(), key=lambda w: (w["started_at"], w["id"]))
        return [WorkerInfo(**w) for w in workers]

    def prune_workers(self, heartbeat_before: int) -> int:
        with self._locked(exclusive=False):
            if not any(w["heartbeat_at"] < heartbeat_before for w in self._workers.values()):
                return 0
        with self._locked(exclusive=True):
            stale = [i for i, w in self._workers.items() if w["heartbeat_at"] < heartbeat_before]
            if stale:
                self._commit([{"op": "unregister", "ids": stale}])
            return len(stale)
