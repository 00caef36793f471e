"""The kit's tests of exactness and extremes: ids compared as exact text,
the largest values the core accepts kept whole, the orders that purges and
``worker status`` rely on, and compare-and-set made by several processes at
once (not only through claims)."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from ..limits import MAX_COMMAND_LENGTH, MAX_ID_LENGTH, MAX_QUEUE_NAME_LENGTH
from ..models import Attempt, Change, JobState, WorkerInfo
from ..storage import Storage
from .kit import T0, KitBase, new_job

#: A 4-byte UTF-8 character: a store that counts bytes, or keeps 3-byte
#: UTF-8 (MySQL's ``utf8``), cuts or mangles it.
CLEF = "\U0001d11e"


def _compete(opener: KitBase, home: Path, worker: int, ids: list[str],
             queue: multiprocessing.Queue[tuple[int, list[str]]]) -> None:
    """Try to take every job by compare-and-set; report the ids won."""
    store = opener.open_storage(home)
    won: list[str] = []
    try:
        for job_id in ids:
            change = Change(job_id, {"state": JobState.PENDING, "last_error": None},
                            {"last_error": f"w{worker}", "priority": worker})
            if store.apply([change])[0] is not None:
                won.append(job_id)
    finally:
        store.close()
        queue.put((worker, won))


class LimitPromises(KitBase):
    def test_ids_are_exact_text(self, raw: Storage) -> None:
        """No case folding, no Unicode normalisation, no collation: ``Job``
        and ``job``, ``é`` and ``e`` + combining accent are four jobs."""
        ids = ["Job", "job", "JOB", "\u00e9", "e\u0301", "ß", "ss"]
        raw.insert([(new_job(i, command=f"echo {n}"), ()) for n, i in enumerate(ids)])
        got = {i: raw.get(i) for i in ids}
        assert {i: job.command if job else None for i, job in got.items()} == {
            i: f"echo {n}" for n, i in enumerate(ids)}, "each id finds its own job"
        assert [j.id for j in raw.list_jobs()] == ids
        assert raw.get("jOb") is None and raw.get("e") is None

    def test_the_largest_values_are_kept_whole(self, raw: Storage) -> None:
        """What the core accepts at its limits: an id of 255 characters of
        4 bytes each, a command of 1,000,000 characters, a 64-character
        queue, 1 MiB output tails, a long error."""
        job_id = CLEF * MAX_ID_LENGTH
        command = ("echo " + CLEF + "x" * MAX_COMMAND_LENGTH)[:MAX_COMMAND_LENGTH]
        queue = "q" * MAX_QUEUE_NAME_LENGTH
        tail = ("é" * 600_000)[:1024 * 1024]
        attempt = Attempt(job_id=job_id, number=1, worker_id="h" * 300 + ":1:abc",
                          started_at=T0, finished_at=T0 + 1, outcome="failed",
                          exit_code=1, error="e" * 100_000, stdout_tail=tail,
                          stderr_tail=tail)
        job = new_job(job_id, command=command, queue=queue).replace(
            state=JobState.DEAD, attempts=1, last_error="e" * 100_000, finished_at=T0 + 1)
        raw.insert([(job, [attempt])])
        stored = raw.get(job_id)
        assert stored is not None, "the job with the longest id"
        assert (len(stored.id), len(stored.command), stored.queue) == (
            MAX_ID_LENGTH, MAX_COMMAND_LENGTH, queue)
        assert stored == job, "every field as given"
        [kept] = raw.attempts(job_id)
        assert len(kept.stdout_tail or "") == len(tail) and kept == attempt

    def test_finished_orders_by_finished_at_then_updated_at(self, raw: Storage) -> None:
        """Imported jobs may lack ``finished_at``: their ``updated_at`` stands
        in (purge and retention delete the oldest first)."""
        done = JobState.COMPLETED
        raw.insert([
            (new_job("late").replace(state=done, finished_at=T0 + 30, updated_at=T0 + 30), ()),
            (new_job("no-end").replace(state=done, finished_at=None, updated_at=T0 + 20), ()),
            (new_job("early").replace(state=done, finished_at=T0 + 10, updated_at=T0 + 40), ()),
        ])
        assert [j.id for j in raw.finished([done])] == ["early", "no-end", "late"]
        assert [j.id for j in raw.finished([done], before=T0 + 25)] == ["early", "no-end"]

    def test_workers_are_listed_in_order_of_start(self, raw: Storage) -> None:
        for n, wid in enumerate(["z:3:c", "a:1:a", "m:2:b"]):
            raw.put_worker(WorkerInfo(id=wid, hostname="h", pid=n + 1,
                                      started_at=T0 + (2 - n) * 10, heartbeat_at=T0))
        assert [w.id for w in raw.list_workers()] == ["m:2:b", "a:1:a", "z:3:c"], (
            "by started_at, not by id")

    def test_compare_and_set_holds_across_processes(self, home: Path, raw: Storage) -> None:
        """Six processes each try to change every one of 200 jobs from the
        same expectation: each job is changed by exactly one of them. (Claims
        test this too, unless a store claims its own way.)"""
        if not self.supports_processes:
            pytest.skip("store is confined to one process")
        ids = [f"c{i:03d}" for i in range(200)]
        raw.insert([(new_job(i), ()) for i in ids])
        ctx = multiprocessing.get_context("fork")
        queue: multiprocessing.Queue[tuple[int, list[str]]] = ctx.Queue()
        procs = [ctx.Process(target=_compete, args=(self, home, n, ids, queue))
                 for n in range(1, 7)]
        for p in procs:
            p.start()
        wins = [queue.get(timeout=120) for _ in procs]
        for p in procs:
            p.join(timeout=30)
        winners: dict[str, list[str]] = {}
        for n, won in wins:
            for job_id in won:
                winners.setdefault(job_id, []).append(f"w{n}")
        twice = {i: w for i, w in winners.items() if len(w) > 1}
        some = dict(list(twice.items())[:10])
        assert not twice, f"{len(twice)} job(s) changed by several processes: {some}"
        assert len(winners) == len(ids), f"{len(ids) - len(winners)} job(s) changed by none"
        for job in raw.list_jobs():
            assert job.last_error == f"w{job.priority}", (job.id, job.last_error, job.priority)
