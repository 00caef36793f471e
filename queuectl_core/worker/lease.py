"""A running job's lease as its worker sees it: when to renew it, and when a
worker that cannot reach the store must give the job up.

A lease is the store's promise that no other worker takes the job before
``expires_at``. Past that instant another worker may recover the job and
start it again, so a worker that could not renew in time stops its command
first: two copies of one job never run at once. Each store call is bounded
(``Storage.bound_calls``) by :func:`call_deadline_ms`, a quarter of the
lease, so a worker tries a renewal only while its answer can still arrive
before the lease ends.
"""

from __future__ import annotations

#: Part of the lease one store call may take before it counts as stalled.
CALL_SHARE = 4
#: Retry a failed renewal this often (at most).
RETRY_MS = 1000
#: A result waiting for the store is tried again at least this often: its
#: job's lease is not renewed meanwhile, so once the store is back the result
#: must be recorded before the lease ends and a sweep takes the job back.
RESULT_RETRY_S = 1.0


def call_deadline_ms(lease_ms: int) -> int:
    """How long one store call of a worker may take (at least 1 s)."""
    return max(1000, lease_ms // CALL_SHARE)


class Lease:
    """The lease on one running job: ``expires_at`` as last granted (epoch
    ms, the store's record), renewed every ``beat_ms``."""

    def __init__(self, expires_at: int, lease_ms: int, beat_ms: int, now: int) -> None:
        self.expires_at = expires_at
        self.lease_ms = lease_ms
        self.beat_ms = beat_ms
        self.renew_at = now + beat_ms

    def renewed(self, now: int, expires_at: int | None) -> None:
        self.expires_at = expires_at if expires_at is not None else now + self.lease_ms
        self.renew_at = now + self.beat_ms

    def failed(self, now: int) -> bool:
        """A renewal failed (the store unreachable or silent). True when the
        job must be given up now: the next try, and the time it may take,
        would end after the lease. Otherwise try again soon."""
        retry_in = min(self.beat_ms, RETRY_MS)
        self.renew_at = now + retry_in
        return now + retry_in + call_deadline_ms(self.lease_ms) >= self.expires_at
