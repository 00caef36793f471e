"""Notifiers: configurable listeners of job events (alerts, metrics, audit).

A notifier plugin registers a :class:`~queuectl_core.registry.NotifierSpec`
(``queuectl_notifiers`` hook) whose ``factory(options, context)`` returns a
:class:`Notifier`. It is enabled and configured in YAML::

    notifiers:
      dlqfile: {path: dead.jsonl}

Each process that changes jobs (a worker; the CLI for ``enqueued``,
``cancelled`` and ``dlq_retried``) builds the notifiers named there once,
and calls :meth:`Notifier.on_event` after each change is stored, for the
events in :attr:`Notifier.events`.
"""

from __future__ import annotations

# typing is not imported at run time.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from .models import Attempt, Job

#: Every event, in the order a job may meet them. ``failed``: a retry is
#: scheduled; ``dead``: moved to the DLQ; ``lost``: an attempt abandoned (its
#: worker died, lost its lease or was stopped by force).
EVENTS = ("enqueued", "claimed", "completed", "failed", "dead", "lost", "cancelled",
          "dlq_retried")


class Notifier:
    """Base of notifiers: override :meth:`on_event` (and :meth:`close` if
    something must be flushed or waited for)."""

    #: The events this notifier is told of. Workers hand a busy stream of
    #: claims from one job to the next without stopping when no notifier
    #: wants more than ``dead``: ask only for what you use.
    events: frozenset[str] = frozenset(EVENTS)

    def on_event(self, event: str, job: Job, attempt: Attempt | None) -> None:
        """``job`` (as stored after the change) met ``event``; ``attempt`` is
        the attempt that just ended, when there is one. Called in the
        process that made the change, after it is stored; the worker waits
        for it, so be quick (start a thread or a process for slow work). An
        exception is logged with the plugin named, and never affects the
        queue."""

    def close(self) -> None:
        """The process is about to exit: flush, and wait (briefly) for what
        this notifier started."""
