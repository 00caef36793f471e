from __future__ import annotations

from queuectl_core.builtin import MAX_DELAY_SECONDS, ExponentialBackoff
from queuectl_core.models import Settings
from queuectl_core.retry import next_run_at


def test_default_schedule_matches_the_contract() -> None:
    """Defaults: at most 4 runs, retries after 2, 4 and 8 s, dead at attempt 4."""
    policy, settings = ExponentialBackoff(), Settings()
    gaps = [next_run_at(attempts=n, max_retries=3, now=0, policy=policy, settings=settings)
            for n in range(1, 5)]
    assert gaps == [2000, 4000, 8000, None]


def test_custom_base_and_zero_retries() -> None:
    policy = ExponentialBackoff()
    settings = Settings(backoff_base=3)
    assert next_run_at(attempts=2, max_retries=5, now=10, policy=policy,
                       settings=settings) == 10 + 9000
    assert next_run_at(attempts=1, max_retries=0, now=0, policy=policy,
                       settings=settings) is None


def test_huge_exponents_are_capped() -> None:
    settings = Settings(backoff_base=1000, max_retries=10_000)
    assert ExponentialBackoff().delay_seconds(5000, settings) == MAX_DELAY_SECONDS
