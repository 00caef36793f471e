"""The store's state as one process knows it: what ``snapshot.json`` holds,
with the journal's operations replayed on top (every operation is
idempotent), and the snapshot document that writes it back."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from queuectl_core.limits import DEFAULT_QUEUE

from .derived import Derived
from .files import dumps
from .records import (
    ACTIVE_STATES,
    FINISHED_ORDER,
    FINISHED_STATES,
    IMPORTABLE_STATES,
    REVIVABLE_STATES,
    V1_FINISHED_STATES,
    V2_FINISHED_STATES,
    Damaged,
    Record,
    check_counts,
    check_job,
    check_worker,
    finish_key,
    is_int,
    merged,
    upgrade_v1,
)
from .schedule_ops import (
    load_schedules,
    replay_fire,
    replay_prune,
    replay_schedule,
    snapshot_schedules,
)

FORMAT = "queuectl-json"
#: 2: jobs have queue, timeout, cwd, env, retry and cancel_requested_at,
#: attempts have output tails; cancelled jobs; paused queues; purge; the
#: finished-job index. 3: jobs that run after others (``after``, ``waiting``
#: and ``skipped`` jobs, ``finished_after`` in the snapshot, ``revive`` of a
#: skipped job), concurrency and unique keys. An older store is read as it
#: is, and upgraded by the first change (opening a store is one).
FORMAT_VERSION = 3
#: The first format with the finished-job index.
INDEX_VERSION = 2


class State:
    """Jobs, counters, settings, workers and paused queues."""

    def __init__(self) -> None:
        self.version = FORMAT_VERSION  # of the snapshot read (and its journal)
        self.generation = 1
        self.next_seq = 1
        # Finished jobs (in files, or imported and not yet written): queue ->
        # state -> how many.
        self.finished: dict[str, dict[str, int]] = {}
        self.settings: dict[str, Any] = {}
        self.workers: dict[str, Record] = {}
        self.paused: set[str] = set()
        #: Active jobs (pending, waiting, processing, failed), in no
        #: particular order; changed only through ``put`` and ``pop``.
        self.jobs: dict[str, Record] = {}
        #: Running jobs per concurrency key, unique keys' holders, children.
        self.derived = Derived()
        #: Finished jobs committed by an ``import`` line whose files may not
        #: be written yet (until an ``imported`` line or a compaction). They
        #: count in ``finished`` and are read like files; never active.
        self.unwritten: dict[str, Record] = {}
        #: Jobs purged since the snapshot: their files may still exist (a
        #: crash right after the purge line) and are ignored; compaction
        #: removes them before it writes the snapshot that forgets the line.
        self.purged: set[str] = set()
        #: Jobs that finished since the snapshot: id -> (finish key, seq,
        #: state). Compaction appends them to the index.
        self.fresh: dict[str, tuple[int, int, str]] = {}
        #: The snapshot's journal was created, with its first line, before
        #: the snapshot (``"journal": true``): a journal missing or empty is
        #: damage, never "nothing written since". Older snapshots lack it.
        self.journal_kept = False
        #: Recurring schedules (name -> document) and their firing records
        #: (name -> (tick, manual) -> record); see schedules.py.
        self.schedules: dict[str, Record] = {}
        self.firings: dict[str, dict[tuple[int, bool], Record]] = {}

    # ---------------------------------------------------------- snapshot
    @classmethod
    def from_snapshot(cls, doc: Any) -> State:
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise Damaged(f"not a {FORMAT} snapshot (no \"format\": \"{FORMAT}\")")
        version = doc.get("version")
        if not is_int(version) or version < 1:
            raise Damaged("no valid format version")
        if version > FORMAT_VERSION:
            raise Damaged(f"format version {version} is newer than this queuectl-json "
                          f"understands ({FORMAT_VERSION}); upgrade queuectl-json")
        generation, next_seq = doc.get("generation"), doc.get("next_seq")
        if not (is_int(generation) and generation >= 1 and is_int(next_seq)):
            raise Damaged("generation or next_seq is not a whole number")
        finished = doc.get("finished")
        if version == 1:  # one queue, no cancelled jobs, no pauses
            counts = {DEFAULT_QUEUE: check_counts(finished, V1_FINISHED_STATES)}
            paused: Any = []
        else:
            if not isinstance(finished, dict):
                raise Damaged("'finished' must map queue names to counts")
            known = V2_FINISHED_STATES if version == 2 else FINISHED_STATES
            counts = {queue: check_counts(n, known) for queue, n in finished.items()}
            paused = doc.get("paused")
            if not isinstance(paused, list) or not all(isinstance(q, str) for q in paused):
                raise Damaged("'paused' must be a list of queue names")
        settings = doc.get("settings")
        workers, jobs = doc.get("workers"), doc.get("jobs")
        if not (isinstance(settings, dict) and isinstance(workers, list)
                and isinstance(jobs, list)):
            raise Damaged("settings, workers or jobs missing")
        finished_after = doc.get("finished_after") if version >= 3 else {}
        if not (isinstance(finished_after, dict)
                and all(isinstance(a, list) and a and all(isinstance(p, str) for p in a)
                        for a in finished_after.values())):
            raise Damaged("'finished_after' must map job ids to lists of job ids")
        state = cls()
        for rec in jobs:
            if version == 1:
                rec = upgrade_v1(rec)
            check_job(rec, ACTIVE_STATES)
            if rec["id"] in state.jobs:
                raise Damaged(f"job {rec['id']!r} appears twice")
            state.put(rec)
        for job_id, after in finished_after.items():
            if job_id in state.jobs:
                raise Damaged(f"job {job_id!r} is active and in 'finished_after'")
            state.derived.finished(job_id, after)
        state.version, state.generation, state.next_seq = version, generation, next_seq
        state.finished, state.paused, state.settings = counts, set(paused), settings
        state.workers = {w["id"]: w for w in map(check_worker, workers)}
        state.journal_kept = doc.get("journal") is True
        load_schedules(state, doc)
        return state

    def snapshot_bytes(self, generation: int) -> bytes:
        """One JSON document, laid out one job per line for people."""
        finished = {queue: counts for queue, counts in sorted(self.finished.items())
                    if any(counts.values())}
        head = dumps({"format": FORMAT, "version": FORMAT_VERSION, "generation": generation,
                      "next_seq": self.next_seq, "finished": finished,
                      "paused": sorted(self.paused), "settings": self.settings,
                      "finished_after": dict(sorted(self.derived.finished_after.items())),
                      "journal": True, **snapshot_schedules(self)})
        workers = sorted(self.workers.values(), key=lambda w: (w["started_at"], w["id"]))
        jobs = sorted(self.jobs.values(), key=lambda r: r["seq"])
        parts = [head[:-1], b',\n"workers":[']
        parts.append(b",".join(dumps(w) for w in workers))
        parts.append(b'],\n"jobs":[\n')
        parts.append(b",\n".join(dumps(r) for r in jobs))
        parts.append(b"\n]}\n")
        return b"".join(parts)

    def written(self, generation: int) -> None:
        """A snapshot of this state was written: the journal is forgotten."""
        self.unwritten = {}
        self.purged = set()
        self.fresh = {}
        self.version = FORMAT_VERSION
        self.generation = generation
        self.journal_kept = True

    # ---------------------------------------------------------- active jobs
    def put(self, rec: Record) -> None:
        """Make ``rec`` an active job's record (new, or replacing one)."""
        job_id = rec["id"]
        derived = self.derived
        old = self.jobs.get(job_id)
        if old is not None:
            derived.deactivate(old)
            derived.relink(job_id, old["after"], rec["after"])
        else:
            derived.relink(job_id, derived.finished_after.pop(job_id, None), rec["after"])
        self.jobs[job_id] = rec
        derived.activate(rec)

    def pop(self, job_id: str) -> Record | None:
        """Take a job out of the active set (it finished): its record."""
        rec = self.jobs.pop(job_id, None)
        if rec is not None:
            self.derived.deactivate(rec)
            self.derived.finished(job_id, rec["after"])
        return rec

    # ---------------------------------------------------------- replay
    def apply(self, op: Any, *, check: bool) -> None:
        """Apply one journal operation. ``check`` validates what it produces
        (for lines written by others)."""
        try:
            self._apply(op, check)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise Damaged(f"malformed operation ({type(exc).__name__}: {exc})") from None

    def count(self, queue: str, state: str, delta: int) -> None:
        per = self.finished.get(queue)
        if per is None:
            per = self.finished[queue] = dict.fromkeys(FINISHED_ORDER, 0)
        per[state] += delta

    def _apply(self, op: Any, check: bool) -> None:
        if not isinstance(op, dict):
            raise Damaged("an operation is not a JSON object")
        kind = op.get("op")
        v1 = self.version < 2  # a journal written by format 1
        replay = _REPLAY.get(kind) if not (v1 and kind in _V2_OPS) else None
        if replay is None:
            raise Damaged(f"unknown operation {kind!r}")
        replay(self, op, check, v1)

    def _enqueue(self, op: Record, check: bool, v1: bool) -> None:
        for rec in op["jobs"]:
            if v1:
                rec = upgrade_v1(rec)
            if check:
                check_job(rec, ACTIVE_STATES)
            self.put(rec)
            self.purged.discard(rec["id"])
            self.next_seq = max(self.next_seq, rec["seq"] + 1)

    def _set(self, op: Record, check: bool, v1: bool) -> None:
        job_id = op["id"]
        rec = self.jobs.get(job_id)
        if rec is None:
            raise Damaged(f"it changes job {job_id!r}, which is not active")
        new = merged(rec, op["fields"], op.get("attempt"))
        if v1:
            new = upgrade_v1(new)
        if check:
            check_job(new, ACTIVE_STATES, after_checked="after" not in op["fields"])
        self.put(new)

    def _finish(self, op: Record, check: bool, v1: bool) -> None:
        state = op["state"]
        if state not in FINISHED_STATES:
            raise Damaged(f"a job cannot finish as {state!r}")
        key = op.get("key")
        if not v1 and not is_int(key):
            raise Damaged("a 'finish' operation needs the whole-number 'key'")
        rec = self.pop(op["id"])
        if rec is not None:
            self.count(rec["queue"], state, 1)
            if is_int(key):
                self.fresh[rec["id"]] = (key, rec["seq"], state)

    def _revive(self, op: Record, check: bool, v1: bool) -> None:
        rec = op["job"]
        if v1:
            rec = upgrade_v1(rec)
        if check:
            check_job(rec, ACTIVE_STATES)
        left = op.get("from", "dead")  # format 3 revives skipped jobs too
        if left not in REVIVABLE_STATES:
            raise Damaged(f"a job cannot be revived from {left!r}")
        if rec["id"] not in self.jobs:
            self.put(rec)
            self.unwritten.pop(rec["id"], None)
            self.fresh.pop(rec["id"], None)
            self.count(rec["queue"], left, -1)
            self.next_seq = max(self.next_seq, rec["seq"] + 1)

    def _imported(self, op: Record, check: bool, v1: bool) -> None:
        done = op["ids"]
        if not isinstance(done, list) or not all(isinstance(i, str) for i in done):
            raise Damaged("an 'imported' operation needs an 'ids' list of text")
        for job_id in done:
            self.unwritten.pop(job_id, None)

    def _pause(self, op: Record, check: bool, v1: bool) -> None:
        queue, paused = op["queue"], op["paused"]
        if not isinstance(queue, str) or not isinstance(paused, bool):
            raise Damaged("a 'pause' operation needs a text queue and true or false")
        if paused:
            self.paused.add(queue)
        else:
            self.paused.discard(queue)

    def _setting(self, op: Record, check: bool, v1: bool) -> None:
        if not isinstance(op["key"], str):
            raise Damaged("a setting key is not text")
        self.settings[op["key"]] = op["value"]

    def _worker(self, op: Record, check: bool, v1: bool) -> None:
        worker = check_worker(op["worker"]) if check else op["worker"]
        self.workers[worker["id"]] = worker

    def _heartbeat(self, op: Record, check: bool, v1: bool) -> None:
        """Written by earlier versions (now: ``worker``, the whole record)."""
        current = self.workers.get(op["id"])
        if current is not None:
            new = {**current, "heartbeat_at": op["heartbeat_at"],
                   "current_job": op["current_job"], "job_pgid": op["job_pgid"]}
            self.workers[op["id"]] = check_worker(new) if check else new

    def _unregister(self, op: Record, check: bool, v1: bool) -> None:
        for worker_id in op["ids"]:
            self.workers.pop(worker_id, None)

    def _import(self, op: Record, check: bool, v1: bool) -> None:
        records = op["jobs"]
        if not isinstance(records, list):
            raise Damaged("an 'import' operation has no 'jobs' list")
        if v1:
            records = [upgrade_v1(rec) for rec in records]
        if check:
            ids: set[str] = set()
            for rec in records:
                check_job(rec, IMPORTABLE_STATES)
                if rec["id"] in ids:
                    raise Damaged(f"job {rec['id']!r} is imported twice")
                ids.add(rec["id"])
        for rec in records:
            job_id = rec["id"]
            self.purged.discard(job_id)
            if rec["state"] in FINISHED_STATES:
                old = self.unwritten.get(job_id)
                if old is not None:  # applied again: count it once
                    self.count(old["queue"], old["state"], -1)
                self.unwritten[job_id] = rec
                self.count(rec["queue"], rec["state"], 1)
                self.derived.finished(job_id, rec["after"])
                if not v1:
                    self.fresh[job_id] = (finish_key(rec), rec["seq"], rec["state"])
            else:
                self.put(rec)
            self.next_seq = max(self.next_seq, rec["seq"] + 1)

    def _purge(self, op: Record, check: bool, v1: bool) -> None:
        gone = op["jobs"]
        if not isinstance(gone, list):
            raise Damaged("a 'purge' operation has no 'jobs' list")
        for item in gone:
            job_id, state, queue = item["id"], item["state"], item["queue"]
            if not (isinstance(job_id, str) and isinstance(queue, str)
                    and state in FINISHED_STATES):
                raise Damaged("a purged job needs a text id and queue and a finished state")
            if job_id in self.jobs:
                raise Damaged(f"it purges job {job_id!r}, which is active")
            if job_id in self.purged:
                continue
            self.purged.add(job_id)
            self.derived.forget(job_id)
            self.unwritten.pop(job_id, None)
            self.fresh.pop(job_id, None)
            self.count(queue, state, -1)


#: How each journal operation is replayed.
_REPLAY: dict[Any, Callable[[State, Record, bool, bool], None]] = {
    "enqueue": State._enqueue, "set": State._set, "finish": State._finish,
    "revive": State._revive, "import": State._import, "imported": State._imported,
    "purge": State._purge, "pause": State._pause, "setting": State._setting,
    "worker": State._worker, "heartbeat": State._heartbeat, "unregister": State._unregister,
    "schedule": replay_schedule, "fire": replay_fire, "prune_firings": replay_prune,
}
#: Operations format 1 did not have (unknown in a format-1 journal).
_V2_OPS = frozenset({"purge", "pause"})
