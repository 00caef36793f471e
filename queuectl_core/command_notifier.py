"""The built-in ``command`` notifier: runs a configured shell command for
every job event it is asked for (by default: each job that reaches the dead
letter queue), with the event and the job as JSON on its stdin (for alerts:
mail, chat webhooks, pagers). An ordinary notifier plugin, through the same
API as any other (``queuectl_notifiers``, ``NotifierSpec``, ``Notifier``).

Configured in YAML, either way::

    dlq:
      command: "curl -fsS -X POST -d @- https://hooks.example/queue"
      timeout: 30        # seconds; the handler's process group is killed after

    notifiers:
      command:
        command: "curl -fsS -X POST -d @- https://hooks.example/queue"
        timeout: 30
        events: [dead, lost]

The handler runs in its own session, never blocks the worker (a thread waits
for it), and whatever happens to it (exit code, timeout, a missing shell) is
only logged: to ``$QUEUECTL_HOME/logs/dlq-handler.log``, with its output.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .durations import Seconds
from .executor import OTHER_CHILDREN
from .limits import DEFAULT_DLQ_TIMEOUT
from .models import Attempt, Job
from .notify import Notifier
from .registry import PluginContext
from .safefs import open_below
from .timeutil import iso, now_ms

log = logging.getLogger("queuectl.dlq")


Event = Literal["enqueued", "claimed", "completed", "failed", "dead", "lost", "cancelled",
                "dlq_retried"]


class CommandOptions(BaseModel):
    """``notifiers: {command: {...}}`` (or ``dlq: {...}``) in queuectl.yaml."""

    model_config = ConfigDict(extra="forbid")

    command: str = Field(min_length=1, description="run with the event and job as JSON on stdin")
    timeout: Seconds = Field(default=DEFAULT_DLQ_TIMEOUT, gt=0, le=86_400,
                             description="seconds the command may take (or e.g. 90s, 2m)")
    events: list[Event] = Field(default=["dead"], min_length=1,
                                description="the events that run it")


def event_payload(event: str, job: Job, attempt: Attempt | None) -> dict[str, object]:
    """What the command reads on stdin."""
    return {"event": event, "job": job.to_json(),
            "attempt": None if attempt is None else attempt.to_json()}


class CommandNotifier(Notifier):
    """Runs one shell command per event, in its own session, never blocking
    the caller (a thread waits for it)."""

    def __init__(self, command: str, *, timeout: float, log_path: Path,
                 events: frozenset[str] = frozenset({"dead"}), shell: str = "/bin/sh") -> None:
        self.command = command
        self.timeout = timeout
        self.log_path = log_path
        self.events = events
        self.shell = shell
        self._threads: list[threading.Thread] = []

    def _open_log(self) -> int:
        """The log, opened for appending through no symbolic link (neither
        the file nor its directory, ``logs`` in the home)."""
        path = self.log_path
        return open_below(path.parent.parent, [path.parent.name, path.name],
                          os.O_WRONLY | os.O_APPEND | os.O_CREAT)

    def _note(self, text: str) -> None:
        with contextlib.suppress(OSError):
            fd = self._open_log()
            with os.fdopen(fd, "a", encoding="utf-8") as fh:
                fh.write(f"{iso(now_ms())} {text}\n")

    def on_event(self, event: str, job: Job, attempt: Attempt | None) -> None:
        payload = json.dumps(event_payload(event, job, attempt), ensure_ascii=False)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._note(f"job {job.id}: running the DLQ handler"
                   + ("" if event == "dead" else f" for event {event}"))
        try:
            # The payload goes through an unlinked temporary file, so that a
            # handler that never reads its stdin cannot block us on a pipe.
            with tempfile.TemporaryFile() as stdin:
                stdin.write(payload.encode("utf-8"))
                stdin.seek(0)
                out_fd = self._open_log()
                try:
                    env = {**os.environ, "QUEUECTL_JOB_ID": job.id, "QUEUECTL_EVENT": event}
                    proc = subprocess.Popen(
                        [self.shell, "-c", self.command], stdin=stdin, stdout=out_fd,
                        stderr=out_fd, env=env, close_fds=True, start_new_session=True)
                    OTHER_CHILDREN.add(proc.pid)  # not a job's: the executor leaves it be
                finally:
                    os.close(out_fd)
        except OSError as exc:
            self._note(f"job {job.id}: the DLQ handler could not start: {exc}")
            log.warning("DLQ handler for job %s could not start: %s", job.id, exc)
            return
        thread = threading.Thread(target=self._watch, args=(job.id, proc), daemon=True,
                                  name=f"dlq-handler-{proc.pid}")
        thread.start()
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]

    def _watch(self, job_id: str, proc: subprocess.Popen[bytes]) -> None:
        started = time.monotonic()
        try:
            code = proc.wait(self.timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            OTHER_CHILDREN.discard(proc.pid)
            self._note(f"job {job_id}: the DLQ handler timed out after {self.timeout:g} s "
                       "and was killed")
            log.warning("DLQ handler for job %s timed out after %s s", job_id,
                        f"{self.timeout:g}")
            return
        OTHER_CHILDREN.discard(proc.pid)
        took = time.monotonic() - started
        if code == 0:
            self._note(f"job {job_id}: the DLQ handler finished in {took:.2f} s")
        else:
            self._note(f"job {job_id}: the DLQ handler failed (exit {code}) after {took:.2f} s")
            log.warning("DLQ handler for job %s failed with exit code %d", job_id, code)

    def close(self) -> None:
        """Wait for running commands: each gets its timeout enforced (and its
        end logged) before this process exits."""
        deadline = time.monotonic() + self.timeout + 1
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))


def make_command_notifier(options: CommandOptions | None,
                          context: PluginContext) -> CommandNotifier:
    """The factory (``notifiers: {command: {command: ...}}``)."""
    if options is None:
        raise ValueError("give it a command: notifiers: {command: {command: ...}}")
    return CommandNotifier(options.command, timeout=options.timeout,
                           events=frozenset(options.events),
                           log_path=context.home / "logs" / "dlq-handler.log")
