"""The kit's tests of claims, results, leases and recovery."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from ..errors import InvalidStateError, JobNotFoundError
from ..ledger import Ledger
from ..models import ExecResult, JobState, Outcome
from ..transitions import CANCELLED_ERROR
from .kit import (
    BOOM,
    LEASE,
    OK,
    T0,
    KitBase,
    _claim_in_child,
    _record_one,
    claim_problems,
    new_job,
)


class ClaimPromises(KitBase):
    # ------------------------------------------------------------ claim order
    def test_claim_order_priority_then_fifo(self, store: Ledger) -> None:
        """Ids sort against enqueue order, and every job has the same
        ``created_at`` and ``run_at``: only the enqueue order can break the
        ties (not the id, nor a clock)."""
        store.enqueue([new_job("z-low"), new_job("y-high", priority=10), new_job("b-low"),
                       new_job("a-high", priority=10), new_job("0-neg", priority=-1),
                       new_job("m-low")])
        order = [self.claim(store).job.id for _ in range(6)]
        assert order == ["y-high", "a-high", "z-low", "b-low", "m-low", "0-neg"], (
            "claim order: priority, then run_at, then enqueue order")
        assert store.claim("w1", T0, LEASE) is None

    def test_claim_respects_run_at(self, store: Ledger) -> None:
        store.enqueue([new_job("later", run_at=T0 + 5000), new_job("now")])
        assert self.claim(store).job.id == "now"
        assert store.claim("w1", T0 + 4999, LEASE) is None
        assert store.next_run_at() == T0 + 5000
        assert self.claim(store, T0 + 5000).job.id == "later"
        assert store.next_run_at() is None

    def test_earlier_run_at_first_among_equal_priority(self, store: Ledger) -> None:
        store.enqueue([new_job("a", run_at=T0 - 10), new_job("b", run_at=T0 - 20)])
        assert self.claim(store).job.id == "b", "the earlier run_at, not the first id"

    def test_claim_counts_attempt_and_opens_it(self, store: Ledger) -> None:
        store.enqueue([new_job("a")])
        claim = self.claim(store, T0 + 5, worker="w9")
        job = store.get("a")
        assert job is not None
        assert job.state is JobState.PROCESSING and job.attempts == 1 == claim.attempt
        assert job.worker_id == "w9" and job.started_at == T0 + 5
        assert job.lease_expires_at == T0 + 5 + LEASE == claim.lease_expires_at
        [attempt] = store.attempts("a")
        assert (attempt.number, attempt.worker_id, attempt.outcome) == (1, "w9", "running")

    def test_concurrent_claims_across_processes_never_duplicate(self, home: Path,
                                                               store: Ledger) -> None:
        if not self.supports_processes:
            pytest.skip("store is confined to one process")
        total = 300
        store.enqueue([new_job(f"j{i:04d}") for i in range(total)])
        ctx = multiprocessing.get_context("fork")
        queue: multiprocessing.Queue[list[str]] = ctx.Queue()
        procs = [ctx.Process(target=_claim_in_child, args=(self, home, f"w{n}", queue))
                 for n in range(6)]
        for p in procs:
            p.start()
        claimed: list[str] = []
        for _ in procs:
            claimed.extend(queue.get(timeout=120))
        for p in procs:
            p.join(timeout=30)
        exits = [p.exitcode for p in procs]
        assert exits == [0] * len(procs), f"claiming processes exited with {exits}"
        problems = claim_problems([f"j{i:04d}" for i in range(total)], claimed)
        assert not problems, f"{len(claimed)} claims from 6 processes: {problems}"
        wrong = [(job.id, job.state.value, job.attempts) for job in store.list_jobs()
                 if job.attempts != 1 or job.state is not JobState.PROCESSING]
        assert not wrong, (f"{len(wrong)} job(s) not processing with one attempt "
                           f"(id, state, attempts): {wrong[:10]}")

    # ------------------------------------------------------------ outcomes
    def test_complete(self, store: Ledger) -> None:
        store.enqueue([new_job("a")])
        claim = self.claim(store)
        done = store.complete(claim, OK, T0 + 100)
        assert done is not None and done.state is JobState.COMPLETED
        assert done.finished_at == T0 + 100 and done.exit_code == 0
        assert done.lease_expires_at is None
        [attempt] = store.attempts("a")
        assert (attempt.outcome, attempt.exit_code, attempt.finished_at) == ("completed", 0,
                                                                              T0 + 100)
        assert store.claim("w1", T0 + 10**9, LEASE) is None

    def test_fail_schedules_retry(self, store: Ledger) -> None:
        store.enqueue([new_job("a")])
        claim = self.claim(store)
        failed = store.fail(claim, BOOM, T0 + 10, T0 + 2010)
        assert failed is not None
        assert failed.state is JobState.FAILED and failed.run_at == T0 + 2010
        assert failed.last_error == "boom" and failed.exit_code == 3
        assert store.claim("w1", T0 + 2009, LEASE) is None
        again = self.claim(store, T0 + 2010)
        assert again.attempt == 2
        [first, second] = store.attempts("a")
        assert (first.outcome, first.error, first.exit_code) == ("failed", "boom", 3)
        assert second.outcome == "running"

    def test_fail_without_retry_is_dead_and_dlq_retry_revives(self, store: Ledger) -> None:
        store.enqueue([new_job("a", max_retries=0)])
        claim = self.claim(store)
        dead = store.fail(claim, ExecResult(signal=9, error="killed"), T0 + 1, None)
        assert dead is not None and dead.state is JobState.DEAD and dead.attempts == 1
        assert store.list_jobs(JobState.DEAD) == [dead]
        assert store.claim("w1", T0 + 10**9, LEASE) is None
        revived = store.dlq_retry("a", T0 + 50)
        assert revived.state is JobState.PENDING and revived.attempts == 0
        assert revived.run_at == T0 + 50 and revived.max_retries == 0
        again = self.claim(store, T0 + 50)
        assert again.job.attempts == 1, "the retry count starts again"
        assert again.attempt == 2, "attempt numbers go on after the history"
        assert [a.number for a in store.attempts("a")] == [1, 2], "history survives"

    def test_dlq_retry_errors(self, store: Ledger) -> None:
        store.enqueue([new_job("a")])
        with pytest.raises(JobNotFoundError):
            store.dlq_retry("nope", T0)
        with pytest.raises(InvalidStateError):
            store.dlq_retry("a", T0)
        assert store.get("a") is not None and store.get("a").state is JobState.PENDING  # type: ignore[union-attr]

    # ------------------------------------------------------------ one result and a claim
    def test_a_result_and_the_next_claim_in_one_call(self, store: Ledger) -> None:
        store.enqueue([new_job("a", priority=1), new_job("b"), new_job("c")])
        first = self.claim(store, worker="w9")
        done, following = _record_one(
            store, first, ExecResult(exit_code=0, stdout_tail="o", stderr_tail=""), T0 + 100,
            worker_id="w9")
        assert done is not None and done.id == "a" and done.state is JobState.COMPLETED
        assert done.finished_at == T0 + 100 and done.lease_expires_at is None
        [attempt] = store.attempts("a")
        assert (attempt.outcome, attempt.exit_code, attempt.stdout_tail) == ("completed", 0, "o")
        assert following is not None and following.job.id == "b"
        assert following.attempt == 1 and following.worker_id == "w9"
        assert following.lease_expires_at == T0 + 100 + LEASE
        job = store.get("b")
        assert job is not None and job.state is JobState.PROCESSING and job.attempts == 1
        assert job.worker_id == "w9" and job.started_at == T0 + 100
        [opened] = store.attempts("b")
        assert (opened.number, opened.outcome, opened.worker_id) == (1, "running", "w9")
        # The claim it returns is a claim like any other: fenced, completable.
        assert store.renew(following, T0 + 200, LEASE)
        last, none = _record_one(store, following, OK, T0 + 300, worker_id="w9")
        assert last is not None and last.state is JobState.COMPLETED
        assert none is not None and none.job.id == "c"
        done, nothing = _record_one(store, none, OK, T0 + 400, worker_id="w9")
        assert done is not None and done.state is JobState.COMPLETED and nothing is None
        assert store.counts()[JobState.COMPLETED] == 3

    def test_failures_retry_die_or_cancel_and_the_next_is_claimed(self, store: Ledger
                                                                    ) -> None:
        store.enqueue([new_job("r", priority=1), new_job("d", max_retries=0), new_job("x"),
                       new_job("next")])
        r, d, x = (self.claim(store) for _ in range(3))
        # A retry due at once may be claimed again by the same call.
        failed, again = _record_one(store, r, BOOM, T0 + 10, retry_at=T0 + 10)
        assert failed is not None and failed.state is JobState.FAILED
        assert failed.last_error == "boom" and failed.exit_code == 3
        assert again is not None and again.job.id == "r" and again.attempt == 2
        assert [a.outcome for a in store.attempts("r")] == ["failed", "running"]
        dead, following = _record_one(store, d, BOOM, T0 + 20, retry_at=None)
        assert dead is not None and dead.state is JobState.DEAD
        assert following is not None and following.job.id == "next"
        # A cancel requested while it ran wins over the retry.
        store.cancel("x", T0 + 25)
        cancelled, nothing = _record_one(store, x, BOOM, T0 + 30, retry_at=T0 + 30)
        assert cancelled is not None and cancelled.state is JobState.CANCELLED
        assert [a.outcome for a in store.attempts("x")] == ["cancelled"]
        assert nothing is None

    def test_a_stale_result_changes_nothing_and_still_claims(self, store: Ledger) -> None:
        store.enqueue([new_job("a", priority=1), new_job("b", queue="other"),
                       new_job("c", queue="mine")])
        stale = self.claim(store, worker="slow")
        store.recover_expired(T0 + LEASE + 1)
        fresh = self.claim(store, T0 + LEASE + 2, worker="fast")
        assert fresh.job.id == "a"
        done, following = _record_one(store, stale, OK, T0 + LEASE + 3, worker_id="slow",
                                      queues=["mine"])
        assert done is None, "fenced out: the stale result changes nothing"
        job = store.get("a")
        assert job is not None and job.state is JobState.PROCESSING and job.worker_id == "fast"
        assert following is not None and following.job.id == "c", "only the queues asked for"
        assert _record_one(store, fresh, OK, T0 + LEASE + 4, worker_id="fast",
                           queues=["none"])[1] is None
        assert [a.outcome for a in store.attempts("a")] == ["lost", "completed"]

    # ------------------------------------------------------------ record_and_claim
    # Optional for a backend (storage.Storage has a default); these hold for
    # the default and for any override.
    def test_record_and_claim_records_in_order_then_claims(self, store: Ledger) -> None:
        store.enqueue([new_job("a", priority=5), new_job("r", priority=4),
                       new_job("d", priority=3, max_retries=0), new_job("x", priority=2),
                       new_job("n3", priority=1), new_job("n2"), new_job("n1")])
        a, r, d, x = (self.claim(store, worker="w3") for _ in range(4))
        store.cancel("x", T0 + 5)
        dones, claims = store.record_and_claim(
            [Outcome(a, ExecResult(exit_code=0, stdout_tail="hi"), finished_at=T0 + 6,
                     started_at=T0 + 1),
             Outcome(r, BOOM, retry_at=T0 + 60_000), Outcome(d, BOOM), Outcome(x, BOOM)],
            T0 + 10, worker_id="w3", lease_ms=LEASE, limit=2)
        assert [(j.id, j.state) for j in dones if j is not None] == [
            ("a", JobState.COMPLETED), ("r", JobState.FAILED), ("d", JobState.DEAD),
            ("x", JobState.CANCELLED)]
        assert dones[1] is not None and dones[1].run_at == T0 + 60_000
        assert [a.outcome for j in ("a", "r", "d", "x") for a in store.attempts(j)] == [
            "completed", "failed", "failed", "cancelled"]
        assert store.attempts("a")[0].stdout_tail == "hi"
        # finished_at: when the command ended, if given; else the call's now.
        assert dones[0] is not None and dones[0].finished_at == T0 + 6
        assert store.attempts("a")[0].finished_at == T0 + 6
        assert store.attempts("r")[0].finished_at == T0 + 10
        # started_at (when the command started): recorded or left at the
        # claim's time, never anything else.
        assert store.attempts("a")[0].started_at in (T0, T0 + 1)
        assert [c.job.id for c in claims] == ["n3", "n2"], "claim order, at most limit"
        for c in claims:
            job = store.get(c.job.id)
            assert job is not None and job.state is JobState.PROCESSING
            assert (job.worker_id, job.attempts, c.lease_expires_at) == ("w3", 1, T0 + 10 + LEASE)
        # Claims only, and fewer than asked when fewer are due.
        nothing, last = store.record_and_claim([], T0 + 20, worker_id="w3", lease_ms=LEASE,
                                               limit=5)
        assert nothing == [] and [c.job.id for c in last] == ["n1"]
        # Results only.
        dones, none = store.record_and_claim([Outcome(c, OK) for c in [*claims, *last]],
                                             T0 + 30, worker_id="w3", lease_ms=LEASE, limit=0)
        assert none == [] and [j.state for j in dones if j is not None] == [
            JobState.COMPLETED] * 3
        assert store.counts()[JobState.PROCESSING] == 0

    def test_record_and_claim_is_fenced_per_outcome(self, store: Ledger) -> None:
        store.enqueue([new_job("a", priority=2), new_job("b", priority=1), new_job("c")])
        stale = self.claim(store, worker="slow")
        self.claim(store, worker="slow")  # b: taken back with a, then claimed again
        store.recover_expired(T0 + LEASE + 1)
        fresh = self.claim(store, T0 + LEASE + 2, worker="fast")
        assert fresh.job.id == "a"
        b = self.claim(store, T0 + LEASE + 2, worker="slow")
        dones, claims = store.record_and_claim([Outcome(stale, OK), Outcome(b, OK)],
                                               T0 + LEASE + 3, worker_id="slow", lease_ms=LEASE)
        assert dones[0] is None, "fenced out: the stale result changes nothing"
        assert dones[1] is not None and dones[1].state is JobState.COMPLETED
        job = store.get("a")
        assert job is not None and job.state is JobState.PROCESSING and job.worker_id == "fast"
        assert [c.job.id for c in claims] == ["c"]

    # ------------------------------------------------------------ claiming ahead
    def test_a_batch_of_claims_is_what_single_claims_would_take(self, store: Ledger) -> None:
        """record_and_claim with ``limit`` n (a busy worker claiming ahead)
        takes the jobs that n single claims would take, in their order, with
        their attempt numbers, over one queue, all queues, and a list with a
        paused queue; each claim has its own token and open attempt."""
        specs = [("p0-late", 0, T0 - 5, "default"), ("p0-early", 0, T0 - 9, "default"),
                 ("p5", 5, T0, "default"), ("p5-later", 5, T0 - 1, "default"),
                 ("future", 9, T0 + 1, "default"), ("other", 9, T0, "other"),
                 ("paused", 20, T0, "held")]
        store.enqueue([new_job(i, priority=p, run_at=r, queue=q) for i, p, r, q in specs])
        store.enqueue([new_job("retried", priority=99, run_at=T0 - 100, max_retries=1)])
        for number in (1, 2):  # two failed attempts end it dead; then back to pending
            claim = self.claim(store, T0 - 100, worker="w0")
            assert (claim.job.id, claim.attempt) == ("retried", number)
            store.fail(claim, BOOM, T0 - 100, T0 - 100 if number == 1 else None)
        store.dlq_retry("retried", T0 - 50)
        store.set_queue_paused("held", True)
        in_default = ["retried", "p5-later", "p5", "p0-early", "p0-late"]
        with_other = ["retried", "other", *in_default[1:4]]  # "held" is paused
        for queues, order in ((["default"], in_default), (None, with_other),
                              (["default", "other", "held"], with_other)):
            single = [store.claim("w", T0, LEASE, queues) for _ in range(5)]
            expected = [(c.job.id, c.attempt) for c in single if c is not None]
            for claim in reversed([c for c in single if c is not None]):
                assert store.release(claim, T0) is not None
            _, batch = store.record_and_claim([], T0, worker_id="w", lease_ms=LEASE,
                                              queues=queues, limit=5)
            asked = f"record_and_claim(limit=5, queues={queues!r})"
            assert [(c.job.id, c.attempt) for c in batch] == expected, (
                f"{asked} took other jobs than 5 single claims")
            assert [c.job.id for c in batch] == order, f"{asked}: claim order, no paused queue"
            assert dict(expected)["retried"] == 3
            assert len({c.token for c in batch}) == len(batch)
            for claim in batch:
                job = store.get(claim.job.id)
                assert job is not None and job.state is JobState.PROCESSING
                assert (job.worker_id, job.lease_expires_at) == ("w", T0 + LEASE)
                assert claim.lease_expires_at == T0 + LEASE
                running = [a for a in store.attempts(claim.job.id) if a.outcome == "running"]
                assert [a.number for a in running] == [claim.attempt]
            for claim in reversed(batch):
                assert store.release(claim, T0) is not None
        _, batch = store.record_and_claim([], T0, worker_id="w", lease_ms=LEASE, limit=9)
        dones, _ = store.record_and_claim([Outcome(c, OK) for c in batch], T0 + 1,
                                          worker_id="w", lease_ms=LEASE, limit=0)
        assert [j.state for j in dones if j is not None] == [JobState.COMPLETED] * 6
        # Nothing else was touched: the future job and the paused one.
        assert {j.id for j in store.list_jobs(JobState.PENDING)} == {"future", "paused"}

    def test_due_count_counts_what_claim_could_take(self, store: Ledger) -> None:
        store.enqueue([new_job("a"), new_job("b"), new_job("later", run_at=T0 + 50),
                       new_job("p", queue="paused"), new_job("o", queue="other")])
        store.set_queue_paused("paused", True)
        assert store.due_count(T0, limit=10) == 3, "a, b and o: not later (not due), not p (paused)"
        assert store.due_count(T0, limit=2) == 2, "at most limit"
        assert store.due_count(T0 + 50, limit=10) == 4, "later is due at T0 + 50"
        assert store.due_count(T0, queues=["other", "paused"], limit=10) == 1, (
            "only o: p's queue is paused")
        self.claim(store)
        assert store.due_count(T0, limit=10) == 2
        assert store.due_count(T0, queues=["nothing"], limit=10) == 0

    def test_release_gives_a_fresh_claim_back_untouched(self, store: Ledger) -> None:
        store.enqueue([new_job("a", priority=1), new_job("b")])
        before = store.get("a")
        claim = self.claim(store, worker="w7")
        released = store.release(claim, T0 + 5)
        assert released is not None and released.state is JobState.PENDING
        assert (released.attempts, released.worker_id, released.started_at,
                released.finished_at, released.lease_expires_at) == (0, None, None, None, None)
        assert released.run_at == before.run_at  # type: ignore[union-attr]
        assert store.attempts("a") == []
        assert store.release(claim, T0 + 6) is None, "fenced: released once"
        again = self.claim(store, T0 + 7, worker="w8")
        assert (again.job.id, again.attempt) == ("a", 1), "it is next again, as attempt 1"
        assert store.complete(claim, OK, T0 + 8) is None, "the old claim is dead"
        assert store.complete(again, OK, T0 + 9) is not None

    def test_release_after_a_failure_keeps_the_retry(self, store: Ledger) -> None:
        store.enqueue([new_job("r")])
        first = self.claim(store, worker="w1")
        store.fail(first, BOOM, T0 + 10, retry_at=T0 + 20)
        second = self.claim(store, T0 + 20, worker="w2")
        assert second.attempt == 2
        released = store.release(second, T0 + 21)
        assert released is not None and released.state is JobState.FAILED
        assert (released.attempts, released.last_error, released.exit_code) == (1, "boom", 3)
        assert (released.worker_id, released.started_at, released.finished_at) == (
            "w1", T0, T0 + 10)
        assert [a.outcome for a in store.attempts("r")] == ["failed"]
        third = self.claim(store, T0 + 22, worker="w3")
        assert (third.job.id, third.attempt, third.job.attempts) == ("r", 2, 2)

    def test_release_of_a_cancelled_claim_cancels(self, store: Ledger) -> None:
        store.enqueue([new_job("c")])
        claim = self.claim(store)
        store.cancel("c", T0 + 3)
        released = store.release(claim, T0 + 4)
        assert released is not None and released.state is JobState.CANCELLED
        assert released.finished_at == T0 + 4 and released.last_error == CANCELLED_ERROR
        assert store.attempts("c") == []
        assert store.claim("w2", T0 + 5, LEASE) is None

    # ------------------------------------------------------------ leases
    def test_renew_extends_lease(self, store: Ledger) -> None:
        store.enqueue([new_job("a")])
        claim = self.claim(store)
        assert store.renew(claim, T0 + 9000, LEASE)
        assert store.recover_expired(T0 + LEASE + 1) == [], "renewed lease is still valid"
        job = store.get("a")
        assert job is not None and job.lease_expires_at == T0 + 9000 + LEASE

    def test_expired_lease_is_recovered(self, store: Ledger) -> None:
        store.enqueue([new_job("a"), new_job("b")])
        self.claim(store, worker="dead-worker")
        held = self.claim(store, T0 + 5000, worker="live")
        assert store.recover_expired(T0 + LEASE) == [], "not yet expired at the boundary"
        [job] = store.recover_expired(T0 + LEASE + 1)
        assert job.id == "a" and job.state is JobState.FAILED
        assert job.run_at == T0 + LEASE + 1 and job.lease_expires_at is None
        assert job.last_error and "dead-worker" in job.last_error
        assert store.get(held.job.id).state is JobState.PROCESSING  # type: ignore[union-attr]
        [attempt] = store.attempts("a")
        assert attempt.outcome == "lost" and attempt.finished_at == T0 + LEASE + 1
        assert self.claim(store, T0 + LEASE + 1).job.id == "a"

    def test_recovery_of_last_allowed_attempt_is_dead(self, store: Ledger) -> None:
        store.enqueue([new_job("a", max_retries=0)])
        self.claim(store)
        [job] = store.recover_expired(T0 + LEASE + 1)
        assert job.state is JobState.DEAD

    def test_release_worker_jobs_before_expiry(self, store: Ledger) -> None:
        store.enqueue([new_job("a"), new_job("b"), new_job("c")])
        self.claim(store, worker="gone")
        self.claim(store, worker="other")
        assert store.claim("expired", T0, 1) is not None  # a lease that ends at T0 + 1
        [job] = store.recover_expired(T0 + 2, worker_id="gone")
        assert job.id == "a" and job.state is JobState.FAILED
        assert store.get("b").state is JobState.PROCESSING  # type: ignore[union-attr]
        c = store.get("c")
        assert c is not None and c.state is JobState.PROCESSING, "only that worker's jobs"

    def test_forced_release_gives_the_attempt_back(self, store: Ledger) -> None:
        store.enqueue([new_job("first", max_retries=0)])
        self.claim(store, worker="stopped")
        [job] = store.recover_expired(T0 + 1, worker_id="stopped", charge_attempt=False)
        assert job.id == "first" and job.state is JobState.PENDING and job.attempts == 0
        assert [a.outcome for a in store.attempts("first")] == ["interrupted"]
        # A job on its last allowed attempt is not sent to the DLQ by a forced stop.
        retry = self.claim(store, T0 + 1, worker="w")
        assert retry.job.id == "first" and retry.job.attempts == 1 and retry.attempt == 2
        store.fail(retry, BOOM, T0 + 2, T0 + 3)  # (a retry the policy would not give)
        again = self.claim(store, T0 + 3, worker="stopped2")
        assert again.job.attempts == 2 and again.attempt == 3
        [job] = store.recover_expired(T0 + 4, worker_id="stopped2", charge_attempt=False)
        assert job.state is JobState.FAILED and job.attempts == 1 and job.run_at == T0 + 4

    def test_fencing_stale_claim_changes_nothing(self, store: Ledger) -> None:
        store.enqueue([new_job("a")])
        stale = self.claim(store, worker="slow")
        store.recover_expired(T0 + LEASE + 1)
        fresh = self.claim(store, T0 + LEASE + 2, worker="fast")
        assert not store.renew(stale, T0 + LEASE + 3, LEASE)
        assert store.complete(stale, OK, T0 + LEASE + 3) is None
        assert store.fail(stale, BOOM, T0 + LEASE + 3, None) is None
        job = store.get("a")
        assert job is not None and job.state is JobState.PROCESSING and job.worker_id == "fast"
        done = store.complete(fresh, OK, T0 + LEASE + 4)
        assert done is not None and done.state is JobState.COMPLETED and done.attempts == 2
        assert store.complete(fresh, OK, T0 + LEASE + 5) is None, "completes once"
        assert [a.outcome for a in store.attempts("a")] == ["lost", "completed"]

    def test_fencing_after_dlq_retry(self, store: Ledger) -> None:
        store.enqueue([new_job("a", max_retries=0)])
        first = self.claim(store)
        store.fail(first, BOOM, T0 + 1, None)
        store.dlq_retry("a", T0 + 2)
        second = self.claim(store, T0 + 2)
        assert first.job.attempts == second.job.attempts == 1
        assert store.complete(first, OK, T0 + 3) is None, "same retry count, old claim"
        assert store.complete(second, OK, T0 + 3) is not None
