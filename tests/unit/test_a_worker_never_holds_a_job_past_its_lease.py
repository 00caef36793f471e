"""The lease arithmetic of a running job (queuectl_core.worker.lease): a
worker whose renewals keep failing gives the job up before its lease ends,
and never starts a renewal whose answer could come after it."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from queuectl_core.worker.lease import Lease, call_deadline_ms


@given(lease_s=st.integers(3, 86_400),
       took=st.lists(st.floats(0, 1), min_size=1, max_size=200))
def test_renewals_that_keep_failing_give_the_job_up_in_time(lease_s: int,
                                                             took: list[float]) -> None:
    lease_ms = lease_s * 1000
    beat_ms = max(1000, lease_ms // 3)
    deadline = call_deadline_ms(lease_ms)
    lease = Lease(lease_ms, lease_ms, beat_ms, 0)
    for share in took:  # each try fails after this share of the deadline
        start = lease.renew_at
        assert start + deadline < lease.expires_at, "a try that could end after the lease"
        failed_at = start + int(share * deadline)
        if lease.failed(failed_at):
            assert failed_at < lease.expires_at, "gave the job up too late"
            return


@given(lease_s=st.integers(3, 86_400), renewals=st.integers(1, 20))
def test_a_renewal_moves_the_lease_and_the_next_try(lease_s: int, renewals: int) -> None:
    lease_ms = lease_s * 1000
    beat_ms = max(1000, lease_ms // 3)
    lease = Lease(lease_ms, lease_ms, beat_ms, 0)
    now = 0
    for _ in range(renewals):
        now = lease.renew_at
        lease.renewed(now, now + lease_ms)
    assert lease.expires_at == now + lease_ms and lease.renew_at == now + beat_ms
    assert not lease.failed(now), "one failure right after a renewal leaves time to retry"
