"""The JSON file store: the storage seam over one directory, shared by any
number of processes on one machine (see the README for the formats).

Every operation holds ``flock`` on ``lock`` (:mod:`.lock`; shared to read,
exclusive to change) and first catches up with what other processes did
(:mod:`.journal`). A change is committed by appending one journal line; the
core's changes become journal operations in :mod:`.changes`, one line per
call. A job that finishes is first written to its own file (:mod:`.files`);
the line that takes it out of the active set is the commit point. Only
active jobs are in the snapshot and the journal, so the cost of an operation
does not grow with the number of finished jobs; purges find old finished
jobs through the index (:mod:`.index`). What claims, unique keys and
dependencies look up (running jobs per concurrency key, unique keys'
holders, a job's children) is kept in memory as lines are replayed
(:mod:`.derived`); claims pick within concurrency limits (:mod:`.claims`).

The store decides nothing about jobs: :mod:`queuectl_core.transitions`
does, and this stores it.
"""

from __future__ import annotations

import heapq
import json
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from queuectl_core.errors import (
    DISK_FULL_ERRNOS,
    ChangedMeanwhile,
    DuplicateJobError,
    StorageError,
    disk_full,
)
from queuectl_core.models import Attempt, Change, Claim, Job, JobState, WorkerInfo
from queuectl_core.storage import Storage

from . import claims, compaction
from .changes import Batch
from .files import Files, dumps, job_file_name
from .index import INDEX_BUCKET_MS, INDEX_DIR, Index, IndexFile
from .journal import Journal
from .lock import StoreLock
from .records import (
    ACTIVE_STATES,
    FINISHED_STATES,
    IMPORTABLE_STATES,
    Damaged,
    Record,
    check_job,
    check_worker,
    job_record,
    to_attempts,
    to_job,
    to_worker,
)
from .schedules import JsonSchedules
from .state import FORMAT_VERSION, State

if TYPE_CHECKING:
    from queuectl_core.registry import PluginContext

    from .options import JsonOptions

__all__ = ["FORMAT_VERSION", "INDEX_BUCKET_MS", "JsonStorage", "job_file_name"]

log = logging.getLogger(__name__)


def open_store(options: JsonOptions | None, context: PluginContext) -> JsonStorage:
    """The backend's factory (``BackendSpec.factory``): the store under
    QUEUECTL_HOME, as the options say (None: the defaults)."""
    home = Path(context.home_dir)
    if options is None:  # no options in the YAML: defaults, without pydantic
        return JsonStorage(home / "json")
    return JsonStorage(home / options.path, fsync=options.fsync,
                       compact_bytes=options.compact_bytes,
                       lock_timeout_ms=options.lock_timeout_ms)


@dataclass
class _Peek:
    """What :meth:`JsonStorage.finished` read, reused by the purge that
    follows while nothing changed in between (same journal position)."""

    position: tuple[Any, ...]
    records: dict[str, Record]
    files: list[IndexFile]


def _seq(rec: Record) -> int:
    seq: int = rec["seq"]
    return seq


class JsonStorage(JsonSchedules, Storage):
    """A queue kept in JSON files in one directory."""

    def __init__(self, directory: Path, *, fsync: bool = True,
                 compact_bytes: int = 1_048_576, lock_timeout_ms: int = 30_000) -> None:
        self.directory = Path(directory)
        self.fsync = fsync
        self.compact_bytes = compact_bytes
        self.lock_timeout = lock_timeout_ms / 1000
        self._files = Files(self.directory, fsync=fsync)
        self._index = Index(self._files)
        self._journal = Journal(self.directory, self._files)
        self._peek: _Peek | None = None
        self._closed = False
        try:
            self._files.mkdir(self.directory, parents=True)
            self._lock = StoreLock(self.directory, self.lock_timeout)
        except OSError as exc:
            raise StorageError(f"cannot open JSON store {self.directory}: {exc.strerror}"
                               ) from None
        try:
            with self._locked(exclusive=True, init=True):
                pass
        except BaseException:
            self.close()
            raise

    @property
    def _state(self) -> State:
        return self._journal.state

    # ---------------------------------------------------------- plumbing
    def describe(self) -> str:
        return f"json {self.directory}"

    def local_paths(self) -> list[Path]:
        return [self.directory]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._journal.close()
        if hasattr(self, "_lock"):
            self._lock.close()

    @contextmanager
    def _locked(self, *, exclusive: bool, init: bool = False) -> Iterator[None]:
        """Hold the store's lock and catch up with other processes. A writer
        first upgrades a store of an older format version."""
        if self._closed:
            raise StorageError(f"JSON store {self.directory} is closed")
        self._lock.acquire(exclusive)
        try:
            try:
                lost_index = (compaction.create(self._files, self._index, self._journal)
                              if init else False)
                self._journal.refresh(exclusive)
                if exclusive and self._state.version < FORMAT_VERSION:
                    self._upgrade()
                elif lost_index:
                    log.warning("JSON store %s: the %s directory was missing; rebuilding it "
                                "from the job files", self.directory, INDEX_DIR)
                    compaction.rebuild_index(self._index, self._state)
                yield
            except OSError as exc:
                self._journal.invalidate()
                if exc.errno in DISK_FULL_ERRNOS:  # nothing committed: wait and retry
                    raise disk_full(f"JSON store {self.directory}", exc.strerror) from exc
                raise StorageError(f"JSON store {self.directory}: {exc}") from exc
        finally:
            self._lock.release()

    def _upgrade(self) -> None:
        """Rewrite a store of an older format version: compaction writes the
        snapshot in the current format (after building the index from the
        job files). Older job files stay as they are; they are read with the
        defaults of the fields they lack. An older queuectl-json refuses the
        store from then on, instead of misreading it."""
        log.info("JSON store %s: upgrading from format version %d to %d", self.directory,
                 self._state.version, FORMAT_VERSION)
        self._compact()

    # ---------------------------------------------------------- compaction
    def compact(self) -> None:
        """Fold the journal into a new snapshot now (it also happens on its
        own when the journal grows past ``compact_bytes``)."""
        with self._locked(exclusive=True):
            self._compact()

    def _compact(self) -> None:
        compaction.compact(self._files, self._index, self._journal)

    def _maybe_compact(self) -> None:
        if self._journal.offset > max(self.compact_bytes, self._journal.snap_size):
            try:
                self._compact()
            except OSError as exc:
                # The change is committed; compaction is tried again later.
                self._journal.invalidate()
                log.warning("JSON store %s: compaction failed: %s", self.directory, exc)

    # ---------------------------------------------------------- committing
    def _batch(self) -> Batch:
        return Batch(self._lookup, self._state.derived)

    def _commit(self, batch: Batch) -> None:
        """Write the batch's finished jobs' files, append its line (the commit
        point), then remove the files it made obsolete, drop purged jobs'
        index lines and write imported jobs' files. Under the exclusive
        lock, with the state up to date."""
        if not batch.ops:
            return
        peek = self._valid_peek()
        self._files.write_finished(batch.files.values())
        self._journal.append(batch.ops)
        self._peek = None
        try:
            # Only tidying up: a purged job's file is hidden until the next
            # snapshot, which removes any left behind first; a revived job's
            # record wins over its file; the index is a hint.
            self._files.remove_finished(batch.unlink)
            if peek is not None and batch.purged:
                self._index.drop_jobs(peek.files, batch.purged)
        except OSError as exc:
            self._journal.invalidate()
            log.warning("JSON store %s: a change is committed, but removing the files it "
                        "made obsolete failed: %s", self.directory, exc)
        if batch.settle:
            self._settle_imports()
        self._maybe_compact()

    def _settle_imports(self) -> None:
        """Write the files of the imported finished jobs still kept in
        memory, then commit the ``imported`` line that drops them from it.
        A failure is logged: the import is committed and visible, and its
        files are written by the next insert or compaction."""
        records = list(self._state.unwritten.values())
        if not records:
            return
        try:
            self._files.write_finished(records)
            self._journal.append([{"op": "imported", "ids": [r["id"] for r in records]}])
        except OSError as exc:
            self._journal.invalidate()
            log.warning("JSON store %s: imported jobs are committed, but writing their "
                        "files failed (tried again later): %s", self.directory, exc)

    def _valid_peek(self) -> _Peek | None:
        peek = self._peek
        return peek if peek is not None and peek.position == self._journal.position else None

    # ---------------------------------------------------------- reading jobs
    def _finished_record(self, job_id: str) -> Record | None:
        """A finished job's record (imported and not yet in a file, or its
        file); None if the job is active, purged or unknown."""
        state = self._state
        if job_id in state.jobs or job_id in state.purged:
            return None
        rec = state.unwritten.get(job_id)
        if rec is not None:
            return rec
        peek = self._valid_peek()
        if peek is not None and job_id in peek.records:
            return peek.records[job_id]
        return self._files.read_finished(job_id)

    def _lookup(self, job_id: str) -> Record | None:
        """A job's record: active, imported but not yet in a file, or its file."""
        return self._state.jobs.get(job_id) or self._finished_record(job_id)

    def _exists(self, job_id: str) -> bool:
        """Whether a job with that id is stored (duplicate checks)."""
        state = self._state
        return (job_id in state.jobs or job_id in state.unwritten
                or (job_id not in state.purged and self._files.job_path(job_id).exists()))

    def get(self, job_id: str) -> Job | None:
        with self._locked(exclusive=False):
            rec = self._lookup(job_id)
        return None if rec is None else to_job(rec)

    def attempts(self, job_id: str) -> list[Attempt]:
        with self._locked(exclusive=False):
            rec = self._lookup(job_id)
        return [] if rec is None else to_attempts(rec)

    def list_jobs(self, state: JobState | None = None, limit: int | None = None, *,
                  queue: str | None = None) -> list[Job]:
        records = sorted(self._records(state, queue), key=_seq)
        return [to_job(r) for r in records[:limit]]

    def list_newest(self, state: JobState | None = None, limit: int | None = None, *,
                    queue: str | None = None) -> list[Job]:
        records = self._records(state, queue)
        if limit is None:
            newest = sorted(records, key=_seq, reverse=True)
        else:  # keeps ``limit`` records, however many finished files there are
            newest = heapq.nlargest(limit, records, key=_seq)
        return [to_job(r) for r in newest]

    def _records(self, state: JobState | None, queue: str | None) -> Iterator[Record]:
        """The records of the jobs in ``state`` and ``queue``, in no order."""
        wanted = None if state is None else JobState(state).value

        def keep(rec: Record) -> bool:
            return ((wanted is None or rec["state"] == wanted)
                    and (queue is None or rec["queue"] == queue))

        with self._locked(exclusive=False):
            before = {**self._state.jobs, **self._state.unwritten}
            purged = set(self._state.purged)
        yield from (r for r in before.values() if keep(r))
        if wanted is None or wanted in FINISHED_STATES:
            # Finished jobs are read without holding the lock (a long listing
            # must not stall the workers). Each file is replaced whole, and
            # the active set (and imported jobs not yet in files) taken above
            # wins over a file, so every job is listed once, as it was at
            # some moment during the call. Files of purged jobs that a crash
            # left behind are not jobs.
            listed = set(before)
            try:
                for rec in self._files.finished_files():
                    if rec["id"] not in listed and rec["id"] not in purged:
                        listed.add(rec["id"])
                        if keep(rec):
                            yield rec
            except OSError as exc:
                raise StorageError(f"JSON store {self.directory}: {exc}") from exc
            with self._locked(exclusive=False):
                # Jobs that became active meanwhile (dlq retry) whose file
                # was removed before we got to it, or were imported meanwhile.
                after = {**self._state.jobs, **self._state.unwritten}
            yield from (r for i, r in after.items() if i not in listed and keep(r))

    def counts(self, queue: str | None = None) -> dict[JobState, int]:
        with self._locked(exclusive=False):
            counts = dict.fromkeys(JobState, 0)
            for rec in self._state.jobs.values():
                if queue is None or rec["queue"] == queue:
                    counts[JobState(rec["state"])] += 1
            for name, per_state in self._state.finished.items():
                if queue is None or name == queue:
                    for state, n in per_state.items():
                        counts[JobState(state)] += n
        return counts

    def queue_counts(self) -> dict[str, dict[JobState, int]]:
        """From the active jobs in memory and the finished counts kept per
        queue: no finished job is read."""
        found: dict[str, dict[JobState, int]] = {}
        with self._locked(exclusive=False):
            for rec in self._state.jobs.values():
                per = found.setdefault(rec["queue"], dict.fromkeys(JobState, 0))
                per[JobState(rec["state"])] += 1
            for name, per_state in self._state.finished.items():
                for state, n in per_state.items():
                    if n:
                        per = found.setdefault(name, dict.fromkeys(JobState, 0))
                        per[JobState(state)] += n
        return found

    def expired(self, now: int) -> list[Job]:
        with self._locked(exclusive=False):
            stale = [r for r in self._state.jobs.values() if r["state"] == "processing"
                     and r["lease_expires_at"] is not None and r["lease_expires_at"] < now]
        stale.sort(key=lambda r: r["seq"])
        return [to_job(r) for r in stale]

    def finished(self, states: Sequence[JobState], before: int | None = None,
                 limit: int | None = None) -> list[Job]:
        """Through the index: reads the index files of the hours it needs,
        from the oldest, and the files of the jobs it returns (or meets out
        of date), nothing else. Takes the exclusive lock: it drops the index
        lines it finds out of date."""
        wanted = {JobState(s).value for s in states} & FINISHED_STATES
        if not wanted or (limit is not None and limit <= 0):
            return []
        with self._locked(exclusive=True):
            found = self._index.search(wanted, before, limit, self._state.fresh,
                                       self._finished_record)
            try:
                self._index.drop_stale(found)
            except OSError as exc:
                log.warning("JSON store %s: could not drop out-of-date index lines: %s",
                            self.directory, exc)
            self._peek = _Peek(self._journal.position,
                               {r["id"]: r for r in found.records}, found.files)
        return [to_job(r) for r in found.records]

    # ---------------------------------------------------------- claims
    def due(self, now: int, queues: Sequence[str] | None = None, limit: int = 1) -> list[Job]:
        with self._locked(exclusive=False):
            return [to_job(r) for r in claims.due(self._state, now, queues, limit)]

    def due_count(self, now: int, queues: Sequence[str] | None = None, limit: int = 1) -> int:
        if limit <= 0:
            return 0
        with self._locked(exclusive=False):
            due = (r for r in claims.claimable(self._state, queues) if r["run_at"] <= now)
            return claims.slots(self._state).count(due, limit)

    def next_run_at(self, queues: Sequence[str] | None = None) -> int | None:
        with self._locked(exclusive=False):
            slots = claims.slots(self._state)
            return min((r["run_at"] for r in claims.claimable(self._state, queues)
                        if slots.open(r)), default=None)

    def claim(self, worker_id: str, now: int, lease_ms: int,
              queues: Sequence[str] | None = None, limit: int = 1) -> list[Claim]:
        """Picks the due jobs and claims them under one exclusive lock, in
        one journal line: nothing can take them in between."""
        if limit <= 0:
            return []
        with self._locked(exclusive=True):
            batch = self._batch()
            taken = batch.claim(claims.due(self._state, now, queues, limit),
                                worker_id=worker_id, now=now, lease_ms=lease_ms)
            self._commit(batch)
        return taken

    # ---------------------------------------------------------- changes
    def insert(self, records: Sequence[tuple[Job, Sequence[Attempt]]],
               changes: Sequence[Change] = ()) -> None:
        """New jobs are one ``enqueue`` line; a batch with history or
        finished jobs (an import, or a job skipped at once) is one ``import``
        line, after which the finished jobs' files are written (see the
        README). ``changes`` (to the parents) come first in the same line."""
        seen: set[str] = set()
        for job, _ in records:
            if job.id in seen:
                raise DuplicateJobError(job.id)
            seen.add(job.id)
        if not records:
            return
        new = all(job.state.value in ACTIVE_STATES and job.state is not JobState.PROCESSING
                  and not history for job, history in records)
        with self._locked(exclusive=True):
            for job, _ in records:
                if self._exists(job.id):
                    raise DuplicateJobError(job.id)
            batch = self._batch()
            for change in changes:
                if batch.apply(change) is None:
                    raise ChangedMeanwhile(f"job {change.job_id!r} changed meanwhile")
            stored = []
            for seq, (job, history) in enumerate(records, start=self._state.next_seq):
                try:
                    # What is written must read back: a record that the
                    # checks on reading would refuse is refused here.
                    stored.append(check_job(job_record(job, seq, history),
                                            ACTIVE_STATES if new else IMPORTABLE_STATES))
                except Damaged as exc:
                    raise StorageError(f"cannot {'enqueue' if new else 'import'} {exc}"
                                       ) from None
                batch.hold(None, stored[-1])
            # One line commits every job. An import's finished jobs are kept
            # in memory (and read like files) until their files exist.
            batch.ops.append({"op": "enqueue" if new else "import", "jobs": stored})
            batch.settle = True
            self._commit(batch)

    def apply(self, changes: Sequence[Change], *, atomic: bool = False
              ) -> list[Job | None]:
        if not changes:
            return []
        with self._locked(exclusive=True):
            batch = self._batch()
            done = [batch.apply(change) for change in changes]
            if atomic and None in done:
                return [None] * len(changes)  # nothing is written
            self._commit(batch)
        return done

    def dependents(self, job_id: str) -> list[Job]:
        """Through the children index (``derived.Derived``): reads only the
        children, active ones from memory, finished ones from their files."""
        with self._locked(exclusive=False):
            found = [self._lookup(i) for i in self._state.derived.children.get(job_id, ())]
        children = sorted((r for r in found if r is not None), key=lambda r: r["seq"])
        return [to_job(r) for r in children]

    def apply_and_claim(self, changes: Sequence[Change], *, worker_id: str, now: int,
                        lease_ms: int, queues: Sequence[str] | None = None, limit: int = 0,
                        atomic: bool = False) -> tuple[list[Job | None], list[Claim]]:
        """The changes and the claims in one journal line."""
        if not changes and limit <= 0:
            return [], []
        with self._locked(exclusive=True):
            batch = self._batch()
            done = [batch.apply(change) for change in changes]
            if atomic and None in done:
                return [None] * len(changes), []  # nothing is written
            taken = batch.claim(claims.due(self._state, now, queues, limit, batch),
                                worker_id=worker_id, now=now, lease_ms=lease_ms
                                ) if limit > 0 else []
            self._commit(batch)
        return done, taken

    # ---------------------------------------------------------- settings, queues
    def get_settings(self) -> dict[str, Any]:
        with self._locked(exclusive=False):
            return json.loads(json.dumps(self._state.settings))  # type: ignore[no-any-return]

    def set_setting(self, key: str, value: Any) -> None:
        try:
            dumps(value)
        except (TypeError, ValueError) as exc:
            raise StorageError(f"setting {key!r}: value is not JSON-serialisable: {exc}"
                               ) from None
        self._write([{"op": "setting", "key": key, "value": value}])

    def set_queue_paused(self, queue: str, paused: bool) -> bool:
        if not isinstance(queue, str):
            raise TypeError(f"a queue name is text, not {type(queue).__name__}")
        with self._locked(exclusive=True):
            if (queue in self._state.paused) == bool(paused):
                return False
            self._append([{"op": "pause", "queue": queue, "paused": bool(paused)}])
            return True

    def paused_queues(self) -> list[str]:
        with self._locked(exclusive=False):
            return sorted(self._state.paused)

    def _write(self, ops: list[Record]) -> None:
        with self._locked(exclusive=True):
            self._append(ops)

    def _append(self, ops: list[Record]) -> None:
        batch = self._batch()
        batch.ops.extend(ops)
        self._commit(batch)

    # ---------------------------------------------------------- workers
    def put_worker(self, worker: WorkerInfo) -> None:
        try:
            record = check_worker(worker.as_dict())
        except Damaged as exc:
            raise StorageError(f"cannot store {exc}") from None
        self._write([{"op": "worker", "worker": record}])

    def remove_workers(self, worker_ids: Sequence[str]) -> None:
        with self._locked(exclusive=True):
            present = [i for i in dict.fromkeys(worker_ids) if i in self._state.workers]
            if present:
                self._append([{"op": "unregister", "ids": present}])

    def list_workers(self) -> list[WorkerInfo]:
        with self._locked(exclusive=False):
            workers = sorted(self._state.workers.values(),
                             key=lambda w: (w["started_at"], w["id"]))
        return [to_worker(w) for w in workers]
