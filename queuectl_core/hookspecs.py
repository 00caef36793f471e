"""The hooks queuectl calls. Every hook is prefixed ``queuectl_`` and is
called with keyword arguments only, so hooks can gain arguments later
without breaking plugins (pluggy passes an implementation only the
arguments it names).

Registration hooks return an iterable of typed records; the core collects
them from every plugin and selects one by name. Broadcast hooks are
notifications: their return values are ignored and an exception raised by
one implementation is reported and never affects the queue.

A plugin is a module (or object) with functions marked
``@queuectl_core.hookimpl``, made known through an entry point in the
``queuectl`` group::

    [project.entry-points.queuectl]
    myplugin = "queuectl_myplugin"
"""

from __future__ import annotations

from collections.abc import Iterable

import pluggy

from . import PROJECT_NAME
from .models import Attempt, Job
from .registry import BackendSpec, BackoffPolicySpec, CommandSpec, ExecutorSpec, NotifierSpec

hookspec = pluggy.HookspecMarker(PROJECT_NAME)


@hookspec
def queuectl_storage_backends() -> Iterable[BackendSpec]:  # type: ignore[empty-body]
    """Register storage backends.

    :return: records naming each backend, its factory
        ``factory(options, context) -> Storage``, its options model and a
        one-line description. ``--backend NAME`` and ``backend:`` in YAML
        select one by name.

    Example::

        @hookimpl
        def queuectl_storage_backends():
            return [BackendSpec(name="memory", factory=make_store,
                                description="in-memory store for tests")]
    """


@hookspec
def queuectl_executors() -> Iterable[ExecutorSpec]:  # type: ignore[empty-body]
    """Register executors (how a job's command is run).

    :return: records with ``factory(options, context) -> Executor``.
        ``executor:`` in YAML selects one by name (default ``shell``).
    """


@hookspec
def queuectl_backoff_policies() -> Iterable[BackoffPolicySpec]:  # type: ignore[empty-body]
    """Register retry delay policies.

    :return: records with ``factory(options, context) -> BackoffPolicy``.
        ``retry: {policy: NAME}`` in YAML selects one (default
        ``exponential``: ``backoff_base ** attempts`` seconds).
    """


@hookspec
def queuectl_notifiers() -> Iterable[NotifierSpec]:  # type: ignore[empty-body]
    """Register notifiers: configurable listeners of job events (alerts on
    dead jobs, metrics, audit logs).

    :return: records with ``factory(options, context) -> Notifier``. Each
        notifier named under ``notifiers:`` in YAML is built with its
        validated options; its ``on_event`` is called for the events in its
        ``events``. The built-in ``command`` notifier (``dlq.command``) is one.
    """


@hookspec
def queuectl_cli_commands() -> Iterable[CommandSpec]:  # type: ignore[empty-body]
    """Register commands of the ``queuectl`` command line (``queuectl serve``).

    :return: records with ``factory(options, context) -> click.Command``
        (``options`` is None), best given as an import path. They are
        loaded only when the command line names a command that is not one of
        the core's, so they never slow ``enqueue`` or ``status``; ``queuectl
        --help`` lists them. A core command's name is never a plugin's.

    Example::

        @hookimpl
        def queuectl_cli_commands():
            return [CommandSpec(name="serve", factory="queuectl_web.cli:serve_command",
                                description="Serve the web dashboard.")]
    """


@hookspec
def queuectl_job_event(event: str, job: Job, attempt: Attempt | None) -> None:
    """A job changed state (broadcast; results ignored).

    :param event: one of ``enqueued``, ``claimed``, ``completed``, ``failed``
        (a retry is scheduled), ``dead``, ``lost`` (the attempt was abandoned:
        its worker died, lost its lease, or was stopped by force; the job is
        runnable again, dead, or cancelled), ``cancelled`` (by ``queuectl
        cancel``; for a running job, once its worker has stopped it),
        ``dlq_retried``.
    :param job: the job as stored after the change.
    :param attempt: the attempt that just ended, when there is one.

    Called in the process that made the change: a worker; the CLI for
    ``enqueued``, ``dlq_retried`` and ``cancelled`` (of a job that was not
    running); a supervisor (``lost``, and ``dead``
    when a crashed worker's job had no attempts left) or ``worker stop``
    (``lost``) when they release the jobs of a dead worker.
    """


@hookspec
def queuectl_job_dead(job: Job, attempt: Attempt | None) -> None:
    """A job has reached the dead letter queue (broadcast; the DLQ handling
    seam, e.g. for alerts).

    :param job: the dead job, with ``last_error`` and ``attempts``.
    :param attempt: its last attempt, when known.

    Called once per arrival in the DLQ, after the move is stored, in the
    process that moved it there (usually a worker; a supervisor when a
    crashed worker's job had no attempts left). A failing implementation is
    logged and never affects the queue.
    """
