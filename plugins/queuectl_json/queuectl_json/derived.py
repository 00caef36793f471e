"""What the JSON store keeps in memory beside the jobs, for claims, unique
keys and dependencies, kept up to date as the journal is replayed (so it is
never scanned for): the running jobs per concurrency key, the holder of each
unique key, and the jobs that run after each job (children by parent, over
active and finished jobs). And the claim's pick with concurrency limits.

The core decides every rule (``queuectl_core.dependencies``,
``queuectl_core.storage.concurrency_limit``); this only finds the jobs fast.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from typing import Any

from queuectl_core.storage import LIMITS_SETTING, concurrency_limit

from .records import Record, claim_key


class Derived:
    """Indexes of the state's jobs (see the module's docstring)."""

    def __init__(self) -> None:
        #: Concurrency key -> how many ``processing`` jobs have it.
        self.running: dict[str, int] = {}
        #: Unique key -> the active (unfinished) job that holds it.
        self.unique: dict[str, str] = {}
        #: Job id -> the ids of the jobs that name it in their ``after``.
        self.children: dict[str, set[str]] = {}
        #: The ``after`` of finished jobs that have one (those of active jobs
        #: are in their records): kept in the snapshot, since finished jobs'
        #: files are never read whole.
        self.finished_after: dict[str, list[str]] = {}

    # ---------------------------------------------------------- active jobs
    def activate(self, rec: Record) -> None:
        """``rec`` is now an active job's record."""
        key = rec["concurrency_key"]
        if key is not None and rec["state"] == "processing":
            self.running[key] = self.running.get(key, 0) + 1
        unique = rec["unique_key"]
        if unique is not None:
            self.unique[unique] = rec["id"]

    def deactivate(self, rec: Record) -> None:
        """``rec`` is no longer an active job's record (replaced, finished)."""
        key = rec["concurrency_key"]
        if key is not None and rec["state"] == "processing":
            left = self.running.get(key, 0) - 1
            if left > 0:
                self.running[key] = left
            else:
                self.running.pop(key, None)
        unique = rec["unique_key"]
        if unique is not None and self.unique.get(unique) == rec["id"]:
            del self.unique[unique]

    # ---------------------------------------------------------- edges
    def link(self, job_id: str, after: Iterable[str] | None) -> None:
        for parent in after or ():
            self.children.setdefault(parent, set()).add(job_id)

    def unlink(self, job_id: str, after: Iterable[str] | None) -> None:
        for parent in after or ():
            children = self.children.get(parent)
            if children is not None:
                children.discard(job_id)
                if not children:
                    del self.children[parent]

    def relink(self, job_id: str, old: list[str] | None, new: list[str] | None) -> None:
        if old is not new and old != new:
            self.unlink(job_id, old)
            self.link(job_id, new)

    def finished(self, job_id: str, after: list[str] | None) -> None:
        """Job ``job_id`` is finished with ``after`` (it left the active set,
        or a finished record of it was stored)."""
        self.relink(job_id, self.finished_after.pop(job_id, None), after)
        if after:
            self.finished_after[job_id] = after

    def forget(self, job_id: str) -> None:
        """A finished job was deleted (purged)."""
        self.unlink(job_id, self.finished_after.pop(job_id, None))


def running_after(running: Mapping[str, int], active: Mapping[str, Record],
                  changed: Mapping[str, Record | None]) -> dict[str, int]:
    """The running jobs per key once ``changed`` (id -> new record, None:
    deleted) replaces the ``active`` records: what a claim made with other
    changes in one line counts."""
    out = dict(running)
    for job_id, new in changed.items():
        old = active.get(job_id)
        if old is not None and old["concurrency_key"] is not None \
                and old["state"] == "processing":
            out[old["concurrency_key"]] = out.get(old["concurrency_key"], 0) - 1
        if new is not None and new["concurrency_key"] is not None \
                and new["state"] == "processing":
            out[new["concurrency_key"]] = out.get(new["concurrency_key"], 0) + 1
    return out


class Slots:
    """Free slots per concurrency key: the limit (1 when none is set) minus
    the jobs with that key running."""

    def __init__(self, settings: Mapping[str, Any], running: Mapping[str, int]) -> None:
        self._limits = settings.get(LIMITS_SETTING)
        self._running = running
        self._free: dict[str, int] = {}

    def free(self, key: str) -> int:
        free = self._free.get(key)
        if free is None:
            free = self._free[key] = (concurrency_limit(self._limits, key)
                                      - self._running.get(key, 0))
        return free

    def open(self, rec: Record) -> bool:
        """May a claim take ``rec`` now (as far as its key goes)?"""
        key = rec["concurrency_key"]
        return key is None or self.free(key) > 0

    def pick(self, ready: list[Record], limit: int) -> list[Record]:
        """Up to ``limit`` of ``ready`` in claim order, each keyed job only
        while its key has a free slot, counting those picked before it; the
        jobs held back are passed over (no head-of-line blocking)."""
        heap = [(claim_key(r), i) for i, r in enumerate(ready) if self.open(r)]
        heapq.heapify(heap)
        taken: dict[str, int] = {}
        picked: list[Record] = []
        while heap and len(picked) < limit:
            rec = ready[heapq.heappop(heap)[1]]
            key = rec["concurrency_key"]
            if key is not None:
                if taken.get(key, 0) >= self.free(key):
                    continue
                taken[key] = taken.get(key, 0) + 1
            picked.append(rec)
        return picked

    def count(self, due: Iterable[Record], limit: int) -> int:
        """How many of ``due`` a claim could take (at most ``limit``)."""
        plain = 0
        keyed: dict[str, int] = {}
        for rec in due:
            key = rec["concurrency_key"]
            if key is None:
                plain += 1
                if plain >= limit:
                    return limit
            else:
                keyed[key] = keyed.get(key, 0) + 1
        total = plain + sum(min(n, max(self.free(k), 0)) for k, n in keyed.items())
        return min(total, limit)
