"""The kit's tests of jobs that run after others, unique keys and
concurrency limits: ordering and release, cascades, limits under concurrent
claims, and uniqueness under concurrent enqueues."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from .. import dependencies as graph
from ..errors import ChangedMeanwhile, UniqueKeyError, UnknownParentError, UsageError
from ..ledger import Ledger
from ..models import Change, JobState, Outcome
from ..storage import LIMITS_SETTING, Storage
from ..transitions import fence
from .kit import BOOM, LEASE, OK, T0, KitBase, new_job


def _states(store: Ledger, *ids: str) -> dict[str, str]:
    found = {i: store.get(i) for i in ids}
    return {i: job.state.value if job else "missing" for i, job in found.items()}


def _enqueue_unique(opener: KitBase, home: Path, n: int,
                    queue: multiprocessing.Queue[tuple[int, bool]]) -> None:
    store = Ledger(opener.open_storage(home))
    won = False
    try:
        store.enqueue([new_job(f"u{n}", unique_key="nightly")])
        won = True
    except UniqueKeyError:
        pass
    finally:
        store.close()
        queue.put((n, won))


def _claim_keyed(opener: KitBase, home: Path, worker: str,
                 queue: multiprocessing.Queue[list[str]]) -> None:
    """Claim whatever can be claimed, several times, without finishing."""
    store = opener.open_storage(home)
    got: list[str] = []
    try:
        for _ in range(4):
            got.extend(c.job.id for c in store.claim(worker, T0 + 1, LEASE, None, 2))
    finally:
        store.close()
        queue.put(got)


class GraphPromises(KitBase):
    # ------------------------------------------------------------ after
    def test_a_job_waits_until_every_parent_completed(self, store: Ledger) -> None:
        store.enqueue([new_job("a"), new_job("b"), new_job("c", after=["a", "b"])])
        assert _states(store, "c") == {"c": "waiting"}
        first, second = self.claim(store), self.claim(store)
        assert store.claim("w1", T0, LEASE) is None, "a waiting job is never claimed"
        store.complete(first, OK, T0)
        assert _states(store, "c") == {"c": "waiting"}
        store.complete(second, OK, T0)
        assert _states(store, "c") == {"c": "pending"}, "released with the last parent"
        assert self.claim(store).job.id == "c"

    def test_parents_may_come_later_in_the_same_batch(self, store: Ledger) -> None:
        store.enqueue([new_job("child", after=["p"]), new_job("p")])
        assert _states(store, "child", "p") == {"child": "waiting", "p": "pending"}
        assert [j.id for j in store.store.dependents("p")] == ["child"]

    def test_a_dead_parent_skips_its_children_down_the_graph(self, store: Ledger) -> None:
        store.enqueue([new_job("a", max_retries=0), new_job("b", after=["a"]),
                       new_job("c", after=["b"]),
                       new_job("d", after=["b"], after_mode="finished")])
        store.fail(self.claim(store), BOOM, T0, None)
        assert _states(store, "a", "b", "c", "d") == {
            "a": "dead", "b": "skipped", "c": "skipped", "d": "pending"}
        skipped = store.get("b")
        assert skipped is not None and skipped.last_error is not None
        assert "'a'" in skipped.last_error and "dead" in skipped.last_error

    def test_finished_mode_runs_after_a_dead_parent(self, store: Ledger) -> None:
        store.enqueue([new_job("a", max_retries=0),
                       new_job("b", after=["a"], after_mode="finished")])
        store.fail(self.claim(store), BOOM, T0, None)
        assert _states(store, "b") == {"b": "pending"}

    def test_cancel_skips_the_children_of_a_job_and_cancels_a_waiting_one(
            self, store: Ledger) -> None:
        store.enqueue([new_job("a"), new_job("b", after=["a"]), new_job("c", after=["b"]),
                       new_job("x"), new_job("y", after=["x"])])
        store.cancel("a", T0)
        assert _states(store, "a", "b", "c") == {"a": "cancelled", "b": "skipped",
                                                  "c": "skipped"}
        store.cancel("y", T0)
        assert _states(store, "x", "y") == {"x": "pending", "y": "cancelled"}

    def test_dlq_retry_rearms_the_children_it_skipped(self, store: Ledger) -> None:
        store.enqueue([new_job("a", max_retries=0), new_job("b", after=["a"]),
                       new_job("c", after=["b"])])
        store.fail(self.claim(store), BOOM, T0, None)
        store.dlq_retry("a", T0 + 1)
        assert _states(store, "a", "b", "c") == {"a": "pending", "b": "waiting",
                                                  "c": "waiting"}
        store.complete(self.claim(store, T0 + 1), OK, T0 + 2)
        assert _states(store, "b", "c") == {"b": "pending", "c": "waiting"}

    def test_a_diamond_runs_its_join_once_both_sides_completed(self, store: Ledger) -> None:
        store.enqueue([new_job("top"), new_job("left", after=["top"]),
                       new_job("right", after=["top"]),
                       new_job("join", after=["left", "right"])])
        order = []
        while (claim := store.claim("w1", T0, LEASE)) is not None:
            order.append(claim.job.id)
            store.complete(claim, OK, T0)
        assert order[0] == "top" and order[-1] == "join" and len(order) == 4

    def test_an_unknown_parent_is_refused_and_nothing_is_stored(self, store: Ledger) -> None:
        with pytest.raises(UnknownParentError):
            store.enqueue([new_job("ok"), new_job("orphan", after=["nobody"])])
        assert store.list_jobs() == []

    def test_a_cycle_in_a_batch_is_refused(self, store: Ledger) -> None:
        with pytest.raises(UsageError, match="cycle"):
            store.enqueue([new_job("a", after=["b"]), new_job("b", after=["a"])])
        with pytest.raises(UsageError, match="cycle"):
            store.enqueue([new_job("self", after=["self"])])
        assert store.list_jobs() == []

    def test_a_parent_that_changes_while_a_child_is_enqueued_is_never_missed(
            self, store: Ledger, raw: Storage) -> None:
        store.enqueue([new_job("p")])
        ready, guards = graph.placed(raw, [new_job("c", after=["p"])], T0)
        store.complete(self.claim(store), OK, T0)  # meanwhile
        with pytest.raises(ChangedMeanwhile):
            raw.insert([(job, ()) for job in ready], guards)
        assert raw.get("c") is None, "nothing stored"
        store.enqueue([new_job("c", after=["p"])])
        assert _states(store, "c") == {"c": "pending"}

    def test_an_import_counts_the_graph_again(self, store: Ledger) -> None:
        """Exports carry ``after`` but not the internal counts: ``import``
        places a waiting job again, whatever order the lines come in."""
        child = new_job("b", after=["a"]).replace(state=JobState.WAITING)
        store.import_jobs([(child, []), (new_job("a"), [])])
        got = store.get("b")
        assert got is not None and got.state is JobState.WAITING and got.waiting_on == 1
        store.complete(self.claim(store), OK, T0)
        assert _states(store, "b") == {"b": "pending"}

    def test_an_atomic_apply_makes_every_change_or_none(self, raw: Storage) -> None:
        raw.insert([(new_job("a"), ()), (new_job("b"), ())])
        a, b = raw.get("a"), raw.get("b")
        assert a is not None and b is not None
        stale = Change("b", {**fence(b), "state": JobState.DEAD}, {"priority": 2})
        assert raw.apply([Change("a", fence(a), {"priority": 1}), stale],
                         atomic=True) == [None, None]
        after = raw.get("a")
        assert after is not None and after.priority == 0, "the first change was undone"

    def test_an_atomic_apply_and_claim_claims_nothing_unless_every_change_is_made(
            self, raw: Storage) -> None:
        raw.insert([(new_job("a"), ()), (new_job("b"), ()), (new_job("c"), ())])
        a, b = raw.get("a"), raw.get("b")
        assert a is not None and b is not None
        stale = Change("b", {**fence(b), "state": JobState.DEAD}, {"priority": 2})
        done, claims = raw.apply_and_claim([Change("a", fence(a), {"priority": 1}), stale],
                                           worker_id="w1", now=T0, lease_ms=LEASE, limit=1,
                                           atomic=True)
        assert (done, claims) == ([None, None], []), "nothing made, nothing claimed"
        after = raw.get("a")
        assert after is not None and after.priority == 0, "the first change was undone"
        done, claims = raw.apply_and_claim([Change("a", fence(a), {"priority": 1})],
                                           worker_id="w1", now=T0, lease_ms=LEASE, limit=1,
                                           atomic=True)
        assert done[0] is not None and [c.job.id for c in claims] == ["a"]

    def test_the_result_that_releases_a_child_lets_the_same_call_claim_it(
            self, store: Ledger) -> None:
        store.enqueue([new_job("a"), new_job("b", after=["a"])])
        parent = self.claim(store)
        [done], claims = store.record_and_claim([Outcome(parent, OK)], T0, worker_id="w1",
                                                lease_ms=LEASE, limit=1)
        assert done is not None and done.state is JobState.COMPLETED
        assert [c.job.id for c in claims] == ["b"], "the released child, claimed at once"
        assert _states(store, "b") == {"b": "processing"}

    # ------------------------------------------------------------ unique keys
    def test_a_unique_key_is_held_until_its_job_is_final(self, store: Ledger) -> None:
        store.enqueue([new_job("first", unique_key="nightly")])
        with pytest.raises(UniqueKeyError) as caught:
            store.enqueue([new_job("second", unique_key="nightly")])
        assert caught.value.holder == "first"
        assert store.get("second") is None
        store.complete(self.claim(store), OK, T0)
        store.enqueue([new_job("second", unique_key="nightly")])
        assert _states(store, "second") == {"second": "pending"}

    def test_one_of_eight_concurrent_enqueues_of_a_unique_key_wins(self, home: Path) -> None:
        if not self.supports_processes:
            pytest.skip("store is not shared between processes")
        self.open_storage(home).close()
        ctx = multiprocessing.get_context("fork")
        queue: multiprocessing.Queue[tuple[int, bool]] = ctx.Queue()
        procs = [ctx.Process(target=_enqueue_unique, args=(self, home, n, queue))
                 for n in range(8)]
        for proc in procs:
            proc.start()
        results = dict(queue.get(timeout=120) for _ in procs)
        for proc in procs:
            proc.join(30)
        assert sum(results.values()) == 1, f"winners: {results}"

    # ------------------------------------------------------------ limits
    def test_a_limit_holds_back_keyed_jobs_but_not_the_others(self, raw: Storage) -> None:
        raw.set_setting(LIMITS_SETTING, {"gpu": 2})
        raw.insert([(new_job(f"g{i}", concurrency_key="gpu", priority=5), ())
                    for i in range(4)] + [(new_job("m1", concurrency_key="mutex"), ()),
                                          (new_job("m2", concurrency_key="mutex"), ()),
                                          (new_job("plain"), ())])
        got = [c.job.id for c in raw.claim("w1", T0, LEASE, None, 10)]
        got += [c.job.id for c in raw.claim("w2", T0, LEASE, None, 10)]
        assert sorted(got) == ["g0", "g1", "m1", "plain"], (
            "two gpu jobs (its limit), one mutex job (no limit set: 1), and the plain job")
        assert raw.due(T0, None, 10) == [] and raw.due_count(T0, None, 10) == 0
        assert raw.next_run_at() is None, "held-back jobs are not work an idle worker can take"

    def test_a_freed_slot_lets_the_next_keyed_job_run(self, store: Ledger) -> None:
        store.enqueue([new_job("k1", concurrency_key="k"), new_job("k2", concurrency_key="k")])
        first = self.claim(store)
        assert store.claim("w2", T0, LEASE) is None
        store.complete(first, OK, T0)
        assert self.claim(store).job.id == "k2"

    def test_concurrent_claimers_never_exceed_a_limit(self, home: Path) -> None:
        if not self.supports_processes:
            pytest.skip("store is not shared between processes")
        store = self.open_storage(home)
        store.set_setting(LIMITS_SETTING, {"gpu": 3})
        store.insert([(new_job(f"g{i}", concurrency_key="gpu"), ()) for i in range(20)])
        store.close()
        ctx = multiprocessing.get_context("fork")
        queue: multiprocessing.Queue[list[str]] = ctx.Queue()
        procs = [ctx.Process(target=_claim_keyed, args=(self, home, f"w{n}", queue))
                 for n in range(6)]
        for proc in procs:
            proc.start()
        claimed = [job for _ in procs for job in queue.get(timeout=120)]
        for proc in procs:
            proc.join(30)
        assert len(claimed) == 3, f"claimed {claimed}"

