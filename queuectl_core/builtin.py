"""The core's own hook implementations, registered through the ``queuectl``
entry-point group like any plugin: the ``exponential`` backoff policy."""

from __future__ import annotations

from collections.abc import Iterable

from . import hookimpl
from .models import Settings
from .registry import BackoffPolicySpec

#: Longest delay ever scheduled (about 10 years), so that huge exponents
#: cannot overflow a timestamp.
MAX_DELAY_SECONDS = 315_360_000.0


class ExponentialBackoff:
    """``delay = backoff_base ** attempts`` seconds (the original contract)."""

    def delay_seconds(self, attempts: int, settings: Settings) -> float:
        try:
            delay = float(settings.backoff_base) ** attempts
        except OverflowError:
            return MAX_DELAY_SECONDS
        return min(delay, MAX_DELAY_SECONDS)


def _exponential(options: object) -> ExponentialBackoff:
    return ExponentialBackoff()


@hookimpl
def queuectl_backoff_policies() -> Iterable[BackoffPolicySpec]:
    return [
        BackoffPolicySpec(
            name="exponential",
            factory=_exponential,
            description="wait backoff_base ** attempts seconds before each retry",
        )
    ]
