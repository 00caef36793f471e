"""The ``dlqfile`` notifier: appends each job that reaches the dead letter
queue to a JSON-lines file (for a log shipper, or ``tail -f``)::

    notifiers:
      dlqfile: {path: dead.jsonl}     # relative to QUEUECTL_HOME (--home)"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from queuectl_core.models import Attempt, Job
from queuectl_core.notify import Notifier
from queuectl_core.registry import PluginContext


class DlqFileOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = "dead.jsonl"


class DlqFileNotifier(Notifier):
    events = frozenset({"dead"})  # only what it uses

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_event(self, event: str, job: Job, attempt: Attempt | None) -> None:
        line = json.dumps({"event": event, "job": job.to_json(),
                           "attempt": attempt.to_json() if attempt else None})
        # One write of one line with O_APPEND: lines from several workers
        # never interleave.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)


def make_notifier(options: DlqFileOptions | None, context: PluginContext) -> DlqFileNotifier:
    """``context.home`` is the queue's home, wherever ``--home`` put it;
    ``context.log`` is this plugin's logger."""
    path = context.home / (options or DlqFileOptions()).path
    context.log.debug("dead jobs go to %s", path)
    return DlqFileNotifier(path)
