"""The entry point: one registration hook per kind of plugin, each
returning records. Factories and options models are named by import path,
so that ``queuectl plugins`` (and every command that lists plugins) imports
neither them nor pydantic."""

from __future__ import annotations

from collections.abc import Iterable

from queuectl_core import hookimpl
from queuectl_core.registry import BackoffPolicySpec, NotifierSpec


@hookimpl
def queuectl_backoff_policies() -> Iterable[BackoffPolicySpec]:
    return [BackoffPolicySpec(name="steps", factory="queuectl_template.policy:make_policy",
                              options_model="queuectl_template.policy:StepsOptions",
                              description="retry after fixed delays, one per attempt")]


@hookimpl
def queuectl_notifiers() -> Iterable[NotifierSpec]:
    return [NotifierSpec(name="dlqfile", factory="queuectl_template.notifier:make_notifier",
                         options_model="queuectl_template.notifier:DlqFileOptions",
                         description="appends each dead job to a JSON-lines file")]
