"""What happens after a failed attempt: the one rule, in one place."""

from __future__ import annotations

from .models import Settings
from .registry import BackoffPolicy


def next_run_at(*, attempts: int, max_retries: int, now: int, policy: BackoffPolicy,
                settings: Settings) -> int | None:
    """When a failed job runs again, or None if it is dead.

    ``attempts`` counts every claim so far, this one included. A job may
    make ``max_retries + 1`` attempts: it is dead once ``attempts >
    max_retries``; otherwise it waits ``policy.delay_seconds(attempts)``
    (``backoff_base ** attempts`` for the default policy).
    """
    if attempts > max_retries:
        return None
    delay = max(0.0, float(policy.delay_seconds(attempts, settings)))
    return now + round(delay * 1000)
