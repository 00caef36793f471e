"""The core's changes (:class:`~queuectl_core.models.Change`), as journal
operations. A :class:`Batch` gathers the changes of one call into one
journal line (so they commit as one step), keeping the records as they will
be once it is committed, so that each change sees the ones before it.

Which operations a change becomes depends only on where the job is stored
before and after it (the core decides the change; this only stores it):

* active -> active: ``set`` (fields, and the claim's attempt opened or
  updated); a change that drops the claim's attempt rewrites the whole
  record, as an ``enqueue`` line does;
* active -> finished: the job's file is written first, then ``finish``
  takes it out of the active set (the line is the commit point);
* finished -> active: ``revive`` for a dead or skipped job (its file is
  removed after the line); from another finished state, ``purge`` then
  ``enqueue``;
* finished -> finished: ``purge`` then ``import`` (its new file is written
  after the line, as for any import);
* deleted: ``purge`` (files removed after the line); an active job is first
  taken out of the active set by a ``finish`` in the same line.

A change or a new job that would give a unique key a second unfinished
(active) holder raises ``UniqueKeyError`` before anything is written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from queuectl_core.errors import StorageError, UniqueKeyError
from queuectl_core.models import Change, Claim, Job
from queuectl_core.storage import new_token
from queuectl_core.transitions import claimed

from .derived import Derived
from .records import (
    ACTIVE_STATES,
    ATTEMPT_KEYS,
    FINISHED_STATES,
    REVIVABLE_STATES,
    SETTABLE,
    Damaged,
    Record,
    attempt_record,
    check_job,
    finish_key,
    is_int,
    merged,
    stored_value,
    to_job,
)


def _stored(values: Mapping[str, Any]) -> Record:
    stored = {key: stored_value(value) for key, value in values.items()}
    if is_int(stored.get("timeout")):  # a number of seconds: kept as a float
        stored["timeout"] = float(stored["timeout"])
    return stored


def _held_key(rec: Record | None) -> str | None:
    """The unique key ``rec`` holds (an unfinished job's), if any."""
    if rec is None or rec["state"] not in ACTIVE_STATES:
        return None
    key: str | None = rec["unique_key"]
    return key


class Batch:
    """Operations for one journal line, and what they do to the jobs."""

    def __init__(self, lookup: Callable[[str], Record | None], derived: Derived) -> None:
        #: The job's record as stored (active or finished), or None.
        self._lookup = lookup
        self._derived = derived
        #: Unique key -> its holder once the line is committed (None: free),
        #: where this line changes it.
        self._unique: dict[str, str | None] = {}
        self.ops: list[Record] = []
        #: Job id -> its record once the line is committed (None: deleted).
        self.records: dict[str, Record | None] = {}
        #: Finished jobs' files to write before the line.
        self.files: dict[str, Record] = {}
        #: Jobs whose files to remove after the line (deleted, or active again).
        self.unlink: set[str] = set()
        #: Jobs deleted (their index lines can go).
        self.purged: set[str] = set()
        #: Write imported jobs' files after the line (it imports some, or it
        #: is any insert: it settles an import whose files a failure left).
        self.settle = False

    def current(self, job_id: str) -> Record | None:
        if job_id in self.records:
            return self.records[job_id]
        return self._lookup(job_id)

    def active(self, jobs: dict[str, Record]) -> Iterable[Record]:
        """The active records once the line is committed (``jobs``: now)."""
        if not self.records:
            return jobs.values()
        return self._active(jobs)

    def _active(self, jobs: dict[str, Record]) -> Iterator[Record]:
        for job_id, rec in jobs.items():
            if job_id not in self.records:
                yield rec
        for after in self.records.values():
            if after is not None and after["state"] in ACTIVE_STATES:
                yield after

    # ---------------------------------------------------------- unique keys
    def hold(self, old: Record | None, new: Record | None) -> None:
        """A job's record goes from ``old`` to ``new`` (None: none): raises
        UniqueKeyError if ``new`` is active with a unique key another active
        job holds, else notes who holds the keys."""
        old_key, new_key = _held_key(old), _held_key(new)
        if old_key == new_key:
            return
        if new is not None and new_key is not None:
            holder = self._holder(new_key)
            if holder is not None and holder != new["id"]:
                raise UniqueKeyError(new_key, holder)
            self._unique[new_key] = new["id"]
        if old is not None and old_key is not None and self._holder(old_key) == old["id"]:
            self._unique[old_key] = None

    def _holder(self, key: str) -> str | None:
        if key in self._unique:
            return self._unique[key]
        return self._derived.unique.get(key)

    # ---------------------------------------------------------- changes
    def apply(self, change: Change, known: tuple[Record, Job] | None = None) -> Job | None:
        """Add ``change`` if the job meets its expectation (as stored, after
        the changes before it): the job as it will be (deleted: as it was),
        or None. Raises StorageError, before anything is written, for a
        change whose result the store could not read back. (``known``: a
        record and its Job that the caller made, used if still current.)"""
        rec = self.current(change.job_id)
        if rec is None:
            return None
        job = known[1] if known is not None and known[0] is rec else to_job(rec)
        if not change.applies_to(job):
            return None
        if change.delete:
            self.hold(rec, None)
            self._delete(rec)
            return job
        new, fields, attempt, drop = self._changed(rec, change)
        self.hold(rec, new)
        job_id = rec["id"]
        was_active, now_active = rec["state"] in ACTIVE_STATES, new["state"] in ACTIVE_STATES
        if was_active and now_active:
            if drop:
                self.ops.append({"op": "enqueue", "jobs": [new]})
            else:
                op: Record = {"op": "set", "id": job_id, "fields": fields}
                if attempt is not None:
                    op["attempt"] = attempt
                self.ops.append(op)
        elif was_active:
            self.files[job_id] = new
            self.unlink.discard(job_id)
            self.ops.append({"op": "finish", "id": job_id, "state": new["state"],
                             "key": finish_key(new)})
        elif now_active:
            if rec["state"] in REVIVABLE_STATES:
                revive: Record = {"op": "revive", "job": new}
                if rec["state"] != "dead":  # (format 2 revived only dead jobs)
                    revive["from"] = rec["state"]
                self.ops.append(revive)
            else:
                self._purge(job_id, rec["state"], rec["queue"])
                self.ops.append({"op": "enqueue", "jobs": [new]})
            self.files.pop(job_id, None)
            self.unlink.add(job_id)
        else:
            self._purge(job_id, rec["state"], rec["queue"])
            self.ops.append({"op": "import", "jobs": [new]})
            self.settle = True
        self.records[job_id] = new
        return to_job(new)

    def _changed(self, rec: Record, change: Change
                 ) -> tuple[Record, Record, Record | None, bool]:
        """The record after ``change``, the fields and attempt change of its
        ``set`` operation, and whether it drops the claim's attempt."""
        job_id = rec["id"]
        unknown = set(change.fields) - SETTABLE
        if unknown:
            raise StorageError(f"cannot change job {job_id!r}: the JSON store has no field "
                               f"{', '.join(sorted(unknown))}")
        fields = _stored(change.fields)
        attempt: Record | None = None
        drop = False
        step = change.attempt
        history = rec["history"]
        if step is not None:
            if step.open is not None:
                attempt = {"index": len(history), "set": attempt_record(step.open)}
            elif history and rec.get("claim_token") == step.token:
                # The claim's attempt: the latest, while the job holds the claim.
                if step.drop:
                    drop = True
                elif step.fields:
                    unknown = set(step.fields) - ATTEMPT_KEYS
                    if unknown:
                        raise StorageError(f"cannot change an attempt of job {job_id!r}: "
                                           f"no field {', '.join(sorted(unknown))}")
                    attempt = {"index": len(history) - 1, "set": _stored(step.fields)}
        try:
            new = merged(rec, fields, attempt)
            if drop:
                new["history"] = history[:-1]
            check_job(new, ACTIVE_STATES if new["state"] not in FINISHED_STATES
                      else FINISHED_STATES, after_checked="after" not in fields)
        except Damaged as exc:
            raise StorageError(f"cannot store the change of {exc}") from None
        return new, fields, attempt, drop

    def _delete(self, rec: Record) -> None:
        job_id, state = rec["id"], rec["state"]
        if state in ACTIVE_STATES:
            # Only a finished job can be purged: in the same line, this one
            # leaves the active set first (no file: the purge hides it).
            state = "cancelled"
            self.ops.append({"op": "finish", "id": job_id, "state": state,
                             "key": finish_key(rec)})
        self._purge(job_id, state, rec["queue"])
        self.files.pop(job_id, None)
        self.unlink.add(job_id)
        self.purged.add(job_id)
        self.records[job_id] = None

    def _purge(self, job_id: str, state: str, queue: str) -> None:
        item = {"id": job_id, "state": state, "queue": queue}
        last = self.ops[-1] if self.ops else None
        if last is not None and last["op"] == "purge":
            last["jobs"].append(item)  # one operation for a run of purges
        else:
            self.ops.append({"op": "purge", "jobs": [item]})

    # ---------------------------------------------------------- claims
    def claim(self, candidates: Iterable[Record], *, worker_id: str, now: int,
              lease_ms: int) -> list[Claim]:
        """Claim each due job (``transitions.claimed``), in the order given."""
        claims = []
        for rec in candidates:
            token = new_token()
            number = len(rec["history"]) + 1
            current = to_job(rec)
            job = self.apply(claimed(current, worker_id=worker_id, token=token, now=now,
                                     lease_ms=lease_ms, number=number), (rec, current))
            if job is not None:
                claims.append(Claim(job=job, token=token, worker_id=worker_id, attempt=number,
                                    lease_expires_at=now + lease_ms))
        return claims
