"""The kit's tests of the seam itself: compare-and-set writes, the attempt a
change touches, and what ``due`` lists. The other parts of the kit check
the same store through the core's Ledger."""

from __future__ import annotations

from ..models import Attempt, AttemptChange, Change, Job, JobState
from ..storage import Storage
from ..transitions import fence
from .kit import LEASE, T0, KitBase, new_job


class SeamPromises(KitBase):
    def test_apply_changes_a_job_only_while_it_is_as_expected(self, raw: Storage) -> None:
        raw.insert([(new_job("a"), ())])
        job = raw.get("a")
        assert job is not None
        stale = Change("a", {**fence(job), "state": JobState.FAILED}, {"priority": 9})
        assert raw.apply([stale]) == [None], "an expectation that fails changes nothing"
        assert raw.get("a") == job
        [done] = raw.apply([Change("a", fence(job), {"priority": 7, "last_error": "x"})])
        assert done is not None and (done.priority, done.last_error) == (7, "x")
        assert raw.get("a") == done == job.replace(priority=7, last_error="x")
        assert raw.apply([Change("missing", {"state": JobState.PENDING}, {"priority": 1})]
                         ) == [None]

    def test_apply_takes_each_change_of_a_batch_on_its_own(self, raw: Storage) -> None:
        raw.insert([(new_job("a"), ()), (new_job("b").replace(state=JobState.CANCELLED,
                                                              finished_at=T0), ()),
                    (new_job("c"), ())])
        a, b = raw.get("a"), raw.get("b")
        assert a is not None and b is not None
        first = Change("a", fence(a), {"priority": 1, "cancel_requested_at": T0})
        second = Change("a", fence(a), {"priority": 2})  # decided from the same read
        gone = Change("b", fence(b), delete=True)
        done = raw.apply([first, second, gone])
        assert [j.priority if j else None for j in done] == [1, None, 0]
        assert raw.get("a").priority == 1  # type: ignore[union-attr]
        assert raw.get("b") is None and raw.attempts("b") == []
        assert [j.id for j in raw.list_jobs()] == ["a", "c"]

    def test_apply_opens_closes_and_drops_the_claims_attempt(self, raw: Storage) -> None:
        old = Attempt(job_id="a", number=1, worker_id="w0", started_at=T0 - 9,
                      finished_at=T0 - 8, outcome="failed", error="old")
        raw.insert([(new_job("a").replace(state=JobState.FAILED, attempts=1), [old]),
                    (new_job("b"), ())])

        def claimed(job_id: str, token: str, number: int) -> Job:
            job = raw.get(job_id)
            assert job is not None
            [held] = raw.apply([Change(job_id, fence(job), {
                "state": JobState.PROCESSING, "claim_token": token,
                "attempts": job.attempts + 1, "worker_id": "w1", "started_at": T0,
                "lease_expires_at": T0 + LEASE},
                AttemptChange(token, open=Attempt(job_id=job_id, number=number,
                                                  worker_id="w1", started_at=T0)))])
            assert held is not None and held.claim_token == token
            return held

        held = claimed("a", "tok", 2)
        assert [a.number for a in raw.attempts("a")] == [1, 2]
        [closed] = raw.apply([Change("a", fence(held), {
            "state": JobState.COMPLETED, "claim_token": None, "lease_expires_at": None,
            "finished_at": T0 + 5}, AttemptChange("tok", fields={
                "outcome": "completed", "finished_at": T0 + 5, "stdout_tail": "ok ✓"}))])
        assert closed is not None and closed.state is JobState.COMPLETED
        first, second = raw.attempts("a")
        assert first == old, "only the claim's attempt changes"
        assert (second.outcome, second.finished_at, second.stdout_tail) == (
            "completed", T0 + 5, "ok ✓")
        held = claimed("b", "t2", 1)
        [back] = raw.apply([Change("b", fence(held), {
            "state": JobState.PENDING, "claim_token": None, "attempts": 0,
            "lease_expires_at": None, "worker_id": None, "started_at": None},
            AttemptChange("t2", drop=True))])
        assert back is not None and back.state is JobState.PENDING
        assert raw.attempts("b") == [], "a dropped attempt is gone"

    def test_due_lists_claim_order_and_takes_nothing(self, raw: Storage) -> None:
        raw.insert([(new_job("z-low"), ()), (new_job("y-high", priority=5), ()),
                    (new_job("x-low"), ()), (new_job("w-early", run_at=T0 - 1), ()),
                    (new_job("later", run_at=T0 + 1), ()),
                    (new_job("held", queue="paused", priority=9), ()),
                    (new_job("other", queue="other", priority=1), ())])
        raw.set_queue_paused("paused", True)
        assert [j.id for j in raw.due(T0, None, 10)] == [
            "y-high", "other", "w-early", "z-low", "x-low"]
        assert [j.id for j in raw.due(T0, ["default"], 2)] == ["y-high", "w-early"]
        assert [j.id for j in raw.due(T0, ["paused", "other"], 10)] == ["other"]
        assert all(j.state is JobState.PENDING for j in raw.list_jobs())

    def test_claims_by_one_caller_never_overlap(self, raw: Storage) -> None:
        ids = [f"j{9 - i}" for i in range(7)]  # enqueue order against id order
        raw.insert([(new_job(i), ()) for i in ids])
        taken = [c.job.id for n in (1, 3, 2, 5) for c in raw.claim("w", T0, LEASE, None, n)]
        assert taken == ids, "claim order (enqueue order here), each job once"
        assert raw.claim("w", T0, LEASE, None, 3) == []
