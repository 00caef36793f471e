"""The kit's tests of enqueue, import, queries, settings, workers, queues,
cancel and purge."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ..errors import DuplicateJobError, InvalidStateError, JobNotFoundError
from ..ledger import Ledger
from ..models import Attempt, ExecResult, Job, JobState, WorkerInfo
from ..transitions import CANCELLED_ERROR
from .kit import BOOM, LEASE, OK, T0, KitBase, new_job
from .memory import MemoryStorage


class OperationPromises(KitBase):
    # ------------------------------------------------------------ enqueue
    def test_enqueue_and_get(self, store: Ledger) -> None:
        store.enqueue([new_job("a", priority=5, max_retries=7)])
        job = store.get("a")
        assert job is not None
        assert (job.id, job.command, job.state, job.attempts) == ("a", "echo a",
                                                                 JobState.PENDING, 0)
        assert (job.priority, job.max_retries, job.run_at, job.created_at) == (5, 7, T0, T0)
        assert job.last_error is None and job.worker_id is None
        assert store.get("missing") is None

    def test_unicode_and_odd_ids_round_trip(self, store: Ledger) -> None:
        odd = "naïve/job id with spaces 'and' \"quotes\" ✓"
        command = "printf '%s\\n' \"$HOME\" 'ünï' && echo \"a\nb\""
        store.enqueue([new_job(odd, command=command)])
        job = store.get(odd)
        assert job is not None and job.command == command

    def test_duplicate_id_rejected_and_stored_job_unchanged(self, store: Ledger) -> None:
        store.enqueue([new_job("a", command="original")])
        with pytest.raises(DuplicateJobError):
            store.enqueue([new_job("a", command="replacement")])
        job = store.get("a")
        assert job is not None and job.command == "original"

    def test_bulk_enqueue_is_all_or_nothing(self, store: Ledger) -> None:
        store.enqueue([new_job("x")])
        with pytest.raises(DuplicateJobError):
            store.enqueue([new_job("a"), new_job("b"), new_job("x"), new_job("c")])
        with pytest.raises(DuplicateJobError):
            store.enqueue([new_job("d"), new_job("d")])
        assert [j.id for j in store.list_jobs()] == ["x"]
        store.enqueue([new_job(f"j{i}") for i in range(500)])
        assert store.counts()[JobState.PENDING] == 501

    # ------------------------------------------------------------ import
    def _exported(self, store: Ledger) -> list[tuple[Job, list[Attempt]]]:
        return [(job, store.attempts(job.id)) for job in store.list_jobs()]

    def test_import_round_trip(self, store: Ledger, home: Path) -> None:
        # Build a small history in a scratch store of the same kind ...
        source = Ledger(MemoryStorage())
        source.enqueue([new_job("done"), new_job("dead", max_retries=0),
                        new_job("retry", priority=2), new_job("fresh", run_at=T0 + 9),
                        new_job("odd/ id ✓")])
        source.complete(self.claim(source), OK, T0 + 1)            # retry (priority 2)
        source.fail(self.claim(source), BOOM, T0 + 2, None)        # done -> dead
        c = self.claim(source)
        source.complete(c, OK, T0 + 3)
        records = self._exported(source)
        # ... and import it here: everything survives as it was.
        store.enqueue([new_job("existing")])
        store.import_jobs(records)
        for job, history in records:
            assert store.get(job.id) == job
            assert store.attempts(job.id) == history
        assert store.list_jobs(limit=1)[0].id == "existing"
        assert store.counts()[JobState.COMPLETED] == 2
        # Imported claimable jobs are claimed in the usual order.
        assert self.claim(store, T0 + 10).job.id == "existing"
        nxt = self.claim(store, T0 + 10)
        assert nxt.job.id in {"fresh", "odd/ id ✓"}
        dead = next(j for j, _ in records if j.state is JobState.DEAD)
        assert store.dlq_retry(dead.id, T0 + 11).state is JobState.PENDING

    def test_import_is_all_or_nothing(self, store: Ledger) -> None:
        store.enqueue([new_job("taken")])
        source = Ledger(MemoryStorage())
        source.enqueue([new_job("a"), new_job("taken"), new_job("b")])
        with pytest.raises(DuplicateJobError):
            store.import_jobs(self._exported(source))
        twice = self._exported(source)[:1] * 2
        with pytest.raises(DuplicateJobError):
            store.import_jobs(twice)
        assert [j.id for j in store.list_jobs()] == ["taken"]

    def test_a_stream_of_new_jobs_is_stored_all_or_nothing(self, store: Ledger) -> None:
        store.enqueue([new_job("taken")])
        def full(i: int) -> Job:  # every kind of column a new job fills
            return new_job(f"s{i}", env={"K": f"v{i}"}, retry={"policy": "linear"},
                           timeout=1.5, cwd="/tmp", queue="q")

        assert store.enqueue_stream(full(i) for i in range(7)) == 7
        for repeat in ("taken", "s3"):  # stored before, or earlier in the stream
            with pytest.raises(DuplicateJobError) as caught:
                store.enqueue_stream(new_job(i) for i in ("x", "y", repeat, "z"))
            assert caught.value.job_id == repeat, "the error names the repeated id"

        def broken() -> Iterator[Job]:  # what a bad line half way through a file does
            yield new_job("p")
            raise ValueError("line 2: bad")

        with pytest.raises(ValueError):
            store.enqueue_stream(broken())
        assert [j.id for j in store.list_jobs()] == ["taken"] + [f"s{i}" for i in range(7)]
        assert store.get("s6") == full(6)
        assert self.claim(store).job.id == "taken", "claimed in enqueue order"

    # ------------------------------------------------------------ queries
    def test_counts_include_every_state(self, store: Ledger) -> None:
        assert store.counts() == dict.fromkeys(JobState, 0)
        store.enqueue([new_job(n) for n in "abcde"])
        store.complete(self.claim(store), OK, T0)
        store.fail(self.claim(store), BOOM, T0, T0 + 100)
        store.fail(self.claim(store), BOOM, T0, None)
        self.claim(store)
        assert store.counts() == {**dict.fromkeys(JobState, 0), JobState.PENDING: 1,
                                  JobState.PROCESSING: 1, JobState.COMPLETED: 1,
                                  JobState.FAILED: 1, JobState.DEAD: 1}
        store.cancel("e", T0)
        assert store.counts()[JobState.CANCELLED] == 1

    def test_list_filters_limits_and_order(self, store: Ledger) -> None:
        store.enqueue([new_job(f"j{i}", priority=i % 3) for i in range(10)])
        assert [j.id for j in store.list_jobs()] == [f"j{i}" for i in range(10)]
        assert [j.id for j in store.list_jobs(limit=3)] == ["j0", "j1", "j2"]
        store.complete(self.claim(store), OK, T0)
        completed = store.list_jobs(JobState.COMPLETED)
        assert [j.id for j in completed] == ["j2"]
        assert len(store.list_jobs(JobState.PENDING)) == 9
        assert store.list_jobs(JobState.DEAD) == []

    def test_list_newest_is_enqueue_order_backwards(self, store: Ledger) -> None:
        # Ids that sort against enqueue order, two queues, finished jobs too.
        store.enqueue([new_job(f"j{9 - i}", queue="ab"[i % 2], priority=i % 3)
                       for i in range(10)])
        store.complete(self.claim(store), OK, T0)
        store.complete(self.claim(store), OK, T0)
        for state in (None, JobState.PENDING, JobState.COMPLETED, JobState.DEAD):
            for queue in (None, "a", "b"):
                oldest_first = [j.id for j in store.list_jobs(state, queue=queue)]
                newest = [j.id for j in store.list_newest(state, queue=queue)]
                assert newest == oldest_first[::-1], (state, queue)
                assert [j.id for j in store.list_newest(state, 3, queue=queue)] == newest[:3], (
                    "the newest 3", state, queue)
        assert store.list_newest(JobState.COMPLETED)[0] == store.get("j4")

    # ------------------------------------------------------------ settings
    def test_settings_round_trip_and_persist(self, store: Ledger, home: Path) -> None:
        assert store.get_settings() == {}
        store.set_setting("max_retries", 5)
        store.set_setting("backoff_base", 1.5)
        store.set_setting("max_retries", 6)
        assert store.get_settings() == {"max_retries": 6, "backoff_base": 1.5}
        store = self.reopen(store, home)
        try:
            assert store.get_settings() == {"max_retries": 6, "backoff_base": 1.5}
        finally:
            store.close()

    def test_jobs_persist_across_reopen(self, store: Ledger, home: Path) -> None:
        store.enqueue([new_job("a"), new_job("b")])
        store.complete(self.claim(store), OK, T0)
        store = self.reopen(store, home)
        try:
            assert [(j.id, j.state) for j in store.list_jobs()] == [
                ("a", JobState.COMPLETED), ("b", JobState.PENDING)]
            assert len(store.attempts("a")) == 1
        finally:
            store.close()

    # ------------------------------------------------------------ workers
    def test_worker_registry(self, store: Ledger) -> None:
        w = WorkerInfo(id="h:1:x", hostname="h", pid=1, started_at=T0, heartbeat_at=T0)
        store.register_worker(w)
        store.register_worker(w.replace(**{"id": "h:2:y", "pid": 2}))
        store.worker_heartbeat("h:1:x", T0 + 500, "job-1", 4242)
        workers = {x.id: x for x in store.list_workers()}
        assert workers["h:1:x"].heartbeat_at == T0 + 500
        assert (workers["h:1:x"].current_job, workers["h:1:x"].job_pgid) == ("job-1", 4242)
        assert store.prune_workers(T0 + 1) == 1
        assert [x.id for x in store.list_workers()] == ["h:1:x"]
        store.unregister_worker("h:1:x")
        assert store.list_workers() == []

    # ------------------------------------------------------------ job fields
    def test_optional_fields_round_trip(self, store: Ledger, home: Path) -> None:
        env = {"LANG": "C.UTF-8", "ÜNI": "värde = 1", "EMPTY": ""}
        retry = {"policy": "linear", "backoff_base": 3.5, "max_delay": 60.0, "jitter": 0.25}
        store.enqueue([new_job("full", queue="mail.out-2", timeout=1.5, cwd="/tmp/wörk dir",
                               env=env, retry=retry),
                       new_job("bare")])
        for _ in range(2):
            full, bare = store.get("full"), store.get("bare")
            assert full is not None and bare is not None
            assert (full.queue, full.timeout, full.cwd) == ("mail.out-2", 1.5, "/tmp/wörk dir")
            assert full.env == env and full.retry == retry and full.cancel_requested_at is None
            assert (bare.queue, bare.timeout, bare.cwd, bare.env, bare.retry) == (
                "default", None, None, None, None)
            store = self.reopen(store, home) if self.persistent else store
        claim = self.claim(store)
        assert claim.job.env == env and claim.job.retry == retry and claim.job.timeout == 1.5
        store.close()

    def test_output_tails_are_kept_with_the_attempt(self, store: Ledger) -> None:
        store.enqueue([new_job("a"), new_job("b")])
        store.complete(self.claim(store), ExecResult(exit_code=0, stdout_tail="last ✓ line\n",
                                                     stderr_tail=""), T0 + 1)
        store.fail(self.claim(store), ExecResult(exit_code=2, error="bad", stdout_tail=None,
                                                 stderr_tail="bad\n"), T0 + 2, None)
        [a] = store.attempts("a")
        [b] = store.attempts("b")
        assert (a.stdout_tail, a.stderr_tail) == ("last ✓ line\n", "")
        assert (b.stdout_tail, b.stderr_tail) == (None, "bad\n")

    # ------------------------------------------------------------ queues
    def test_named_queues_filter_claims_lists_and_counts(self, store: Ledger) -> None:
        store.enqueue([new_job("d1"), new_job("a1", queue="a", priority=5),
                       new_job("b1", queue="b", priority=9), new_job("a2", queue="a")])
        assert store.claim("w", T0, LEASE, queues=["nothing"]) is None
        assert store.next_run_at(["nothing"]) is None
        claim = store.claim("w", T0, LEASE, queues=["a", "default"])
        assert claim is not None and claim.job.id == "a1"
        claim = store.claim("w", T0, LEASE, queues=["b"])
        assert claim is not None and claim.job.id == "b1"
        assert [j.id for j in store.list_jobs(queue="a")] == ["a1", "a2"]
        assert [j.id for j in store.list_jobs(JobState.PENDING, queue="a")] == ["a2"]
        assert store.list_jobs(queue="zzz") == []
        counts = store.counts("a")
        assert counts[JobState.PENDING] == 1 and counts[JobState.PROCESSING] == 1
        assert sum(store.counts("default").values()) == 1
        claim = store.claim("w", T0, LEASE)
        assert claim is not None and claim.job.id == "d1", "no filter: any queue"

    def test_paused_queue_is_not_claimed_until_resumed(self, store: Ledger, home: Path
                                                       ) -> None:
        store.enqueue([new_job("p1", queue="slow", priority=10),
                       new_job("p2", queue="slow", run_at=T0 - 100), new_job("d1")])
        assert store.paused_queues() == []
        assert store.set_queue_paused("slow", True) is True
        assert store.set_queue_paused("slow", True) is False, "already paused"
        assert store.set_queue_paused("empty-yet", True) is True
        assert store.paused_queues() == ["empty-yet", "slow"]
        assert store.next_run_at() == T0, "paused jobs do not wake idle workers"
        assert store.next_run_at(["slow"]) is None
        claim = store.claim("w", T0, LEASE)
        assert claim is not None and claim.job.id == "d1"
        assert store.claim("w", T0, LEASE) is None
        assert store.claim("w", T0, LEASE, queues=["slow"]) is None
        store = self.reopen(store, home) if self.persistent else store
        try:
            assert store.paused_queues() == ["empty-yet", "slow"], "pauses are stored"
            assert store.set_queue_paused("slow", False) is True
            assert store.set_queue_paused("slow", False) is False
            assert store.next_run_at() == T0 - 100
            assert [self.claim(store).job.id for _ in range(2)] == ["p1", "p2"]
        finally:
            store.close()

    # ------------------------------------------------------------ cancel
    def test_cancel_waiting_jobs(self, store: Ledger) -> None:
        store.enqueue([new_job("p"), new_job("f"), new_job("d", max_retries=0),
                       new_job("c")])
        with pytest.raises(JobNotFoundError):
            store.cancel("nope", T0)
        store.fail(self.claim(store), BOOM, T0, T0 + 99)  # p: failed, retry scheduled
        store.fail(self.claim(store), BOOM, T0, None)  # f: dead
        store.complete(self.claim(store), OK, T0)      # d: completed
        for job_id in ("p", "c"):
            job = store.cancel(job_id, T0 + 5)
            assert job.state is JobState.CANCELLED and job.finished_at == T0 + 5
            assert job.last_error == CANCELLED_ERROR
            assert store.get(job_id) == job
        for job_id in ("p", "f", "d"):
            with pytest.raises(InvalidStateError):
                store.cancel(job_id, T0 + 6)
        assert store.claim("w", T0 + 10**9, LEASE) is None, "cancelled jobs never run"
        assert store.next_run_at() is None
        with pytest.raises(InvalidStateError):
            store.dlq_retry("c", T0 + 7)

    def test_cancel_running_job_wins_over_retry_and_recovery(self, store: Ledger) -> None:
        store.enqueue([new_job("r"), new_job("lost"), new_job("ok"), new_job("forced")])
        claims = {c.job.id: c for c in (self.claim(store) for _ in range(4))}
        for job_id in claims:
            job = store.cancel(job_id, T0 + 1)
            assert job.state is JobState.PROCESSING and job.cancel_requested_at == T0 + 1
        assert store.cancel("r", T0 + 2).cancel_requested_at == T0 + 1, "asking twice"
        assert store.renew(claims["r"], T0 + 2, LEASE), "the claim stays valid"
        # The worker stops the command and records a failure: cancelled, no retry.
        done = store.fail(claims["r"], ExecResult(signal=15, error="killed"), T0 + 3, T0 + 9)
        assert done is not None and done.state is JobState.CANCELLED
        assert [a.outcome for a in store.attempts("r")] == ["cancelled"]
        # A command that succeeded before the cancel reached it stays completed.
        finished = store.complete(claims["ok"], OK, T0 + 3)
        assert finished is not None and finished.state is JobState.COMPLETED
        # A worker that died or lost its lease: cancelled, not retried.
        recovered = {j.id: j for j in store.recover_expired(T0 + 10 * LEASE)}
        assert set(recovered) == {"lost", "forced"}
        assert all(j.state is JobState.CANCELLED for j in recovered.values())
        assert [a.outcome for a in store.attempts("lost")] == ["cancelled"]
        assert store.claim("w", T0 + 10**9, LEASE) is None

    def test_cancel_requested_job_stopped_by_force_is_cancelled(self, store: Ledger) -> None:
        store.enqueue([new_job("a")])
        claim = self.claim(store, worker="stopping")
        store.cancel("a", T0 + 1)
        [job] = store.recover_expired(T0 + 2, worker_id="stopping", charge_attempt=False)
        assert job.state is JobState.CANCELLED
        assert store.claim("w", T0 + 10**9, LEASE) is None
        assert store.complete(claim, OK, T0 + 3) is None, "fenced out"

    # ------------------------------------------------------------ purge
    def _finished_mix(self, store: Ledger) -> None:
        store.enqueue([new_job(f"c{i}") for i in range(3)] + [new_job("dead", max_retries=0),
                                                             new_job("x"), new_job("run")])
        for i in range(3):
            store.complete(self.claim(store), OK, T0 + 100 * (i + 1))   # c0..c2
        store.fail(self.claim(store), BOOM, T0 + 50, None)             # dead
        store.cancel("x", T0 + 60)
        self.claim(store)                                              # run: processing

    def test_purge_by_state_age_id_and_limit(self, store: Ledger) -> None:
        self._finished_mix(store)
        with pytest.raises(ValueError):
            store.purge(states=[JobState.PROCESSING])
        with pytest.raises(ValueError):
            store.purge(states=[JobState.COMPLETED, JobState.PENDING])
        assert store.purge(states=[JobState.COMPLETED], finished_before=T0 + 100) == []
        assert store.purge(states=[JobState.COMPLETED], finished_before=T0 + 201) == [
            "c0", "c1"]
        assert store.get("c0") is None and store.attempts("c0") == []
        assert store.purge(states=[JobState.DEAD], ids=["c2", "x"]) == []
        # Oldest first: dead finished at T0 + 50, x at T0 + 60, c2 at T0 + 300.
        everything = [JobState.COMPLETED, JobState.DEAD, JobState.CANCELLED]
        assert store.purge(states=everything, limit=1) == ["dead"]
        assert {j.id for j in store.list_jobs()} == {"c2", "x", "run"}
        assert store.purge(states=everything) == ["x", "c2"]
        assert [j.id for j in store.list_jobs()] == ["run"]
        store.enqueue([new_job("c0")])  # a purged id is free again
        job = store.get("c0")
        assert job is not None and job.state is JobState.PENDING and job.attempts == 0
        assert store.attempts("c0") == []
