"""What happens after a failed attempt: the one rule, in one place."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from .limits import MAX_DELAY_SECONDS
from .settings import Settings
from .transitions import exhausted


class BackoffPolicy(Protocol):
    """Decides how long to wait before the next attempt (a plugin kind:
    ``queuectl_backoff_policies``)."""

    def delay_seconds(self, attempts: int, settings: Settings) -> float:
        """Seconds to wait after a failed attempt, ``attempts`` being the
        number of attempts made so far (1 after the first)."""
        ...


def next_run_at(*, attempts: int, max_retries: int, now: int, policy: BackoffPolicy,
                settings: Settings, rand: Callable[[], float] = random.random) -> int | None:
    """When a failed job runs again, or None if it is dead.

    ``attempts`` counts every claim so far, this one included. A job may
    make ``max_retries + 1`` attempts: it is dead once ``attempts >
    max_retries``; otherwise it waits ``policy.delay_seconds(attempts)``
    (``backoff_base ** attempts`` for the default policy), capped at
    ``max_delay`` when that is set, then cut by a random fraction of up to
    ``jitter`` (so that jobs that failed together do not retry together).
    The cap and the jitter apply to every policy, plugins' included.
    """
    if exhausted(attempts, max_retries):
        return None
    delay = min(max(0.0, float(policy.delay_seconds(attempts, settings))), MAX_DELAY_SECONDS)
    if settings.max_delay > 0:
        delay = min(delay, settings.max_delay)
    if settings.jitter > 0:
        delay *= 1.0 - settings.jitter * rand()
    return now + round(delay * 1000)


def job_settings(settings: Settings, overrides: Mapping[str, Any] | None) -> Settings:
    """The settings a job's retry uses: its own ``retry`` object's
    ``backoff_base``, ``max_delay`` and ``jitter`` over the shared ones."""
    if not overrides:
        return settings
    changes = {key: float(value) for key, value in overrides.items()
               if key in ("backoff_base", "max_delay", "jitter")}
    return settings.replace(**changes) if changes else settings
