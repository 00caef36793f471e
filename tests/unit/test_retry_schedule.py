"""When a failed job runs again (``queuectl_core.retry``): the backoff
policies, the ``max_delay`` cap, jitter and a job's own retry overrides."""

from __future__ import annotations

import random

from queuectl_core.builtin import ConstantBackoff, ExponentialBackoff, LinearBackoff
from queuectl_core.limits import MAX_DELAY_SECONDS
from queuectl_core.retry import job_settings, next_run_at
from queuectl_core.settings import Settings


def test_default_schedule_retries_after_2_4_8_seconds_then_dies() -> None:
    """Defaults: at most 4 runs, retries after 2, 4 and 8 s, dead at attempt 4."""
    policy, settings = ExponentialBackoff(), Settings()
    gaps = [next_run_at(attempts=n, max_retries=3, now=0, policy=policy, settings=settings)
            for n in range(1, 5)]
    assert gaps == [2000, 4000, 8000, None]


def test_backoff_base_sets_the_delay_and_zero_retries_means_dead_at_once() -> None:
    policy = ExponentialBackoff()
    settings = Settings(backoff_base=3)
    assert next_run_at(attempts=2, max_retries=5, now=10, policy=policy,
                       settings=settings) == 10 + 9000
    assert next_run_at(attempts=1, max_retries=0, now=0, policy=policy,
                       settings=settings) is None


def test_huge_exponents_are_capped_at_the_longest_delay() -> None:
    settings = Settings(backoff_base=1000, max_retries=10_000)
    assert ExponentialBackoff().delay_seconds(5000, settings) == MAX_DELAY_SECONDS


def test_linear_and_constant_policies_grow_as_named() -> None:
    settings = Settings(backoff_base=5)
    assert [LinearBackoff().delay_seconds(n, settings) for n in (1, 2, 3)] == [5, 10, 15]
    assert [ConstantBackoff().delay_seconds(n, settings) for n in (1, 2, 3)] == [5, 5, 5]


def test_max_delay_caps_the_delay() -> None:
    settings = Settings(backoff_base=10, max_delay=60)
    delays = [next_run_at(attempts=n, max_retries=9, now=0, policy=ExponentialBackoff(),
                          settings=settings) for n in (1, 2, 3)]
    assert delays == [10_000, 60_000, 60_000]


def test_jitter_only_shortens_the_delay_within_its_fraction() -> None:
    settings = Settings(backoff_base=2, jitter=0.5)
    assert next_run_at(attempts=3, max_retries=9, now=0, policy=ExponentialBackoff(),
                       settings=settings, rand=lambda: 0.0) == 8000
    assert next_run_at(attempts=3, max_retries=9, now=0, policy=ExponentialBackoff(),
                       settings=settings, rand=lambda: 1.0) == 4000
    rng = random.Random(7)
    seen = {next_run_at(attempts=3, max_retries=9, now=0, policy=ExponentialBackoff(),
                        settings=settings, rand=rng.random) for _ in range(200)}
    assert all(v is not None and 4000 <= v <= 8000 for v in seen) and len(seen) > 50


def test_a_jobs_retry_object_overrides_the_shared_settings() -> None:
    shared = Settings(backoff_base=2, max_delay=0, jitter=0.1)
    assert job_settings(shared, None) is shared
    own = job_settings(shared, {"policy": "linear", "backoff_base": 7, "max_delay": 30})
    assert (own.backoff_base, own.max_delay, own.jitter) == (7.0, 30.0, 0.1)
