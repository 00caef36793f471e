"""What is specific to the PostgreSQL store, part three: LISTEN/NOTIFY
wake-ups (which changes send one, draining, a broken LISTEN connection)."""

from __future__ import annotations

import select
import time
from collections.abc import Callable

import pytest

from queuectl_core.errors import DuplicateJobError
from queuectl_core.ledger import Ledger
from queuectl_core.models import JobState
from queuectl_core.testing import MemoryStorage
from queuectl_core.testing.conformance import BOOM, LEASE, OK, T0, new_job
from queuectl_postgres import connection
from queuectl_postgres.connection import channel_for
from queuectl_postgres.store import PostgresStorage

Opener = Callable[..., PostgresStorage]


def readable(fd: int, timeout: float) -> bool:
    return bool(select.select([fd], [], [], timeout)[0])


def test_enqueue_elsewhere_wakes_a_listener(open_store: Opener) -> None:
    listener, other = open_store(), Ledger(open_store())
    fd = listener.wakeup_fileno()
    assert fd is not None
    assert not readable(fd, 0)
    other.enqueue([new_job("a")])
    # A hang detector, not a timing claim: pickup latency is a benchmark's job.
    assert readable(fd, 5.0), "NOTIFY reaches the listener"
    listener.drain_wakeups()
    assert not readable(fd, 0.05), "drained"
    assert listener.wakeup_fileno() == fd, "the same connection is kept"


def test_every_change_that_makes_work_due_notifies(open_store: Opener) -> None:
    listener, store = open_store(), Ledger(open_store())
    fd = listener.wakeup_fileno()
    assert fd is not None

    def wakes(action: Callable[[], object]) -> bool:
        listener.drain_wakeups()
        while readable(fd, 0.1):  # let earlier notifications arrive and go
            listener.drain_wakeups()
        action()
        woke = readable(fd, 0.5)
        listener.drain_wakeups()
        return woke

    store.enqueue([new_job("r", max_retries=5), new_job("d", max_retries=0), new_job("x"),
                   new_job("rel")])
    r = store.claim("w", T0, LEASE)
    d = store.claim("w", T0, LEASE)
    x = store.claim("w", T0, 1)
    rel = store.claim("w", T0, LEASE)
    assert r is not None and d is not None and x is not None and rel is not None
    assert not wakes(lambda: store.claim("w", T0, LEASE)), "a claim (of nothing) does not wake"
    assert not wakes(lambda: store.renew(r, T0 + 1, LEASE)), "a renewal does not wake"
    assert wakes(lambda: store.fail(r, BOOM, T0 + 1, T0 + 100)), "fail with a retry time"
    assert not wakes(lambda: store.fail(d, BOOM, T0 + 1, None)), "dead: nothing due"
    assert wakes(lambda: store.dlq_retry("d", T0 + 2)), "dlq retry"
    assert wakes(lambda: store.recover_expired(T0 + 5)), "recovered jobs"
    assert not wakes(lambda: store.recover_expired(T0 + 6)), "nothing recovered"
    assert wakes(lambda: store.release(rel, T0 + 7)), "a claim given back"
    source = Ledger(MemoryStorage())
    source.enqueue([new_job("imported")])
    assert wakes(lambda: store.import_jobs([(j, []) for j in source.list_jobs()])), "import"
    done = source.list_jobs()[0].replace(id="imported-done", state=JobState.COMPLETED)
    assert not wakes(lambda: store.import_jobs([(done, [])])), "import of finished jobs"
    again = store.claim("w", T0 + 200, LEASE)
    assert again is not None
    assert not wakes(lambda: store.complete(again, OK, T0 + 201)), "completion: nothing due"
    assert not wakes(lambda: store.set_queue_paused("q", True)), "a pause"
    assert wakes(lambda: store.set_queue_paused("q", False)), "resuming a queue"
    assert not wakes(lambda: store.set_queue_paused("q", False)), "not paused: no change"
    store.enqueue([new_job("c1", queue="cq"), new_job("c2", queue="cq")])
    assert not wakes(lambda: store.cancel("c1", T0 + 300)), "a cancel: nothing due"
    c2 = store.claim("w", T0 + 300, LEASE, queues=["cq"])
    assert c2 is not None and c2.job.id == "c2"
    assert not wakes(lambda: store.cancel("c2", T0 + 301)), "a cancel request"
    assert not wakes(lambda: store.fail(c2, BOOM, T0 + 302, T0 + 400)), "cancelled, no retry"
    assert not wakes(lambda: store.purge(states=[JobState.CANCELLED])), "a purge"


def test_a_notification_is_sent_only_if_the_change_commits(open_store: Opener) -> None:
    listener, store = open_store(), Ledger(open_store())
    fd = listener.wakeup_fileno()
    assert fd is not None
    store.enqueue([new_job("a")])
    assert readable(fd, 5.0)
    time.sleep(0.1)
    listener.drain_wakeups()
    with pytest.raises(DuplicateJobError):
        store.enqueue([new_job("a")])  # a duplicate: nothing stored, nobody woken
    assert not readable(fd, 0.3)


def test_claims_and_changes_keep_the_wakeup_socket_drained(open_store: Opener) -> None:
    """A worker that never idles still reads its LISTEN socket, so that
    unread notifications cannot pile up on the server: when it claims, and
    when it only renews the lease of a long command."""
    busy, other = open_store(), Ledger(open_store())
    ledger = Ledger(busy)
    fd = busy.wakeup_fileno()
    assert fd is not None
    for i in range(20):
        other.enqueue([new_job(f"j{i}")])
    assert readable(fd, 1.0)
    time.sleep(0.3)  # let every notification arrive
    claim = ledger.claim("w", T0, LEASE)
    assert claim is not None
    assert not readable(fd, 0.05)
    other.enqueue([new_job("more")])
    assert readable(fd, 1.0)
    time.sleep(0.1)
    assert ledger.renew(claim, T0 + 1, LEASE) is not None
    assert not readable(fd, 0.05)


def test_broken_listen_connection_is_closed_then_replaced(
        open_store: Opener, terminate: Callable[[int], None],
        monkeypatch: pytest.MonkeyPatch) -> None:
    listener, other = open_store(), Ledger(open_store())
    fd = listener.wakeup_fileno()
    listen = listener.session.listener
    assert fd is not None and listen.conn is not None
    terminate(listen.conn.info.backend_pid)
    assert readable(fd, 2.0), "a dead connection makes the socket readable"
    listener.drain_wakeups()
    assert listen.conn is None, "drain closed the dead connection"
    assert listener.wakeup_fileno() is None, "no busy reconnecting right after a failure"
    monkeypatch.setattr(connection, "LISTEN_RETRY_S", 0.0)
    listen.retry_at = 0.0
    fd2 = listener.wakeup_fileno()
    assert fd2 is not None
    other.enqueue([new_job("a")])
    assert readable(fd2, 1.0)
    listener.drain_wakeups()
    assert not readable(fd2, 0.05)


def test_channel_names_fit_postgres_limits() -> None:
    assert channel_for("queuectl") == "queuectl_queuectl"
    long = channel_for("a" * 63)
    assert len(long) <= 63 and long != channel_for("b" * 63)


def test_a_freed_key_slot_and_a_released_child_wake_idle_workers(open_store: Opener) -> None:
    """A keyed job held back by its key's limit becomes claimable when a job
    with that key stops running (nothing else about it changes), and a job
    that ran after others when its last parent completes: both wake idle
    workers. A job enqueued to wait does not."""
    listener, store = open_store(), Ledger(open_store())
    fd = listener.wakeup_fileno()
    assert fd is not None

    def wakes(action: Callable[[], object]) -> bool:
        while readable(fd, 0.1):
            listener.drain_wakeups()
        action()
        woke = readable(fd, 0.5)
        listener.drain_wakeups()
        return woke

    store.enqueue([new_job("k1", concurrency_key="gpu"), new_job("k2", concurrency_key="gpu"),
                   new_job("parent")])
    first = store.claim("w", T0, LEASE)
    parent = store.claim("w", T0, LEASE)
    assert first is not None and parent is not None and first.job.id == "k1"
    assert store.claim("w", T0, LEASE) is None, "k2 waits for the key"
    assert store.next_run_at() is None, "nothing for an idle worker to wait for"
    assert not wakes(lambda: store.enqueue([new_job("child", after=["parent"])])), "waiting"
    assert wakes(lambda: store.complete(first, OK, T0 + 1)), "the key's slot is free"
    assert wakes(lambda: store.complete(parent, OK, T0 + 1)), "the child is released"
    assert not wakes(lambda: store.set_setting("other", 1)), "a setting"
    assert wakes(lambda: store.set_setting("concurrency_limits", {"gpu": 2})), "a limit"
