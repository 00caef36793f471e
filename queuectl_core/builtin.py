"""The core's own hook implementations, registered through the ``queuectl``
entry-point group like any plugin: the backoff policies ``exponential``
(the default), ``linear`` and ``constant``, and the ``command`` notifier
(``queuectl_core.command_notifier``, the YAML ``dlq.command``). Each reads its one parameter
from the ``backoff_base`` setting; the ``max_delay`` cap and ``jitter`` are
applied by the core to every policy."""

from __future__ import annotations

from collections.abc import Iterable

from . import hookimpl
from .limits import MAX_DELAY_SECONDS
from .registry import BackoffPolicySpec, NotifierSpec
from .settings import Settings

__all__ = ["MAX_DELAY_SECONDS", "ConstantBackoff", "ExponentialBackoff", "LinearBackoff"]


class ExponentialBackoff:
    """``delay = backoff_base ** attempts`` seconds (the original contract)."""

    def delay_seconds(self, attempts: int, settings: Settings) -> float:
        try:
            delay = float(settings.backoff_base) ** attempts
        except OverflowError:
            return MAX_DELAY_SECONDS
        return min(delay, MAX_DELAY_SECONDS)


class LinearBackoff:
    """``delay = backoff_base * attempts`` seconds."""

    def delay_seconds(self, attempts: int, settings: Settings) -> float:
        return min(float(settings.backoff_base) * attempts, MAX_DELAY_SECONDS)


class ConstantBackoff:
    """``delay = backoff_base`` seconds, every time."""

    def delay_seconds(self, attempts: int, settings: Settings) -> float:
        return float(settings.backoff_base)


@hookimpl
def queuectl_backoff_policies() -> Iterable[BackoffPolicySpec]:
    return [
        BackoffPolicySpec(
            name="exponential", factory=lambda options, context: ExponentialBackoff(),
            description="wait backoff_base ** attempts seconds before each retry",
        ),
        BackoffPolicySpec(
            name="linear", factory=lambda options, context: LinearBackoff(),
            description="wait backoff_base * attempts seconds before each retry",
        ),
        BackoffPolicySpec(
            name="constant", factory=lambda options, context: ConstantBackoff(),
            description="wait backoff_base seconds before each retry",
        ),
    ]


@hookimpl
def queuectl_notifiers() -> Iterable[NotifierSpec]:
    return [
        NotifierSpec(
            name="command", factory="queuectl_core.command_notifier:make_command_notifier",
            options_model="queuectl_core.command_notifier:CommandOptions",
            description="runs a shell command with the event and the job as JSON on stdin "
                        "(dlq.command)",
        ),
    ]
