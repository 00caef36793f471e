"""The built-in ``command`` notifier (the DLQ handler) runs a real command
with the event and the job on stdin, for the events it is configured for;
its failures are logged and never raised."""

from __future__ import annotations

import json
import time
from pathlib import Path

from queuectl_core.command_notifier import CommandNotifier
from queuectl_core.models import Attempt, Job, JobState
from queuectl_core.plugins import build_plugins

T0 = 1_800_000_000_000


def dead_job() -> tuple[Job, Attempt]:
    job = Job(id="j1", command="exit 3", state=JobState.DEAD, max_retries=0, run_at=T0,
              created_at=T0, updated_at=T0 + 5, attempts=1, last_error="boom ✗", exit_code=3)
    attempt = Attempt(job_id="j1", number=1, worker_id="w", started_at=T0, finished_at=T0 + 5,
                      outcome="failed", exit_code=3, error="boom ✗")
    return job, attempt


def wait_for(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def test_handler_gets_the_dead_job_as_json(tmp_path: Path) -> None:
    out = tmp_path / "got.json"
    log = tmp_path / "logs" / "dlq-handler.log"
    handler = CommandNotifier(f"cat > {out}.tmp && mv {out}.tmp {out}", timeout=10,
                              log_path=log)
    plugins = build_plugins()
    plugins.add_notifier(plugins.notifier("command"), handler)
    job, attempt = dead_job()
    plugins.job_event("completed", job, attempt)  # not one of its events
    plugins.job_event("dead", job, attempt)
    wait_for(out.exists)
    payload = json.loads(out.read_text())
    assert payload["event"] == "dead"
    assert payload["job"]["id"] == "j1" and payload["job"]["last_error"] == "boom ✗"
    assert payload["attempt"]["exit_code"] == 3
    wait_for(lambda: "finished" in log.read_text())
    assert log.stat().st_mode & 0o077 == 0


def test_failing_and_hanging_handlers_are_only_logged(tmp_path: Path) -> None:
    log = tmp_path / "dlq-handler.log"
    job, attempt = dead_job()
    failing = CommandNotifier("echo cannot reach pager >&2; exit 7", timeout=10,
                                log_path=log)
    failing.on_event("dead", job, attempt)
    wait_for(lambda: "failed (exit 7)" in log.read_text())
    assert "cannot reach pager" in log.read_text()
    hanging = CommandNotifier("sleep 60", timeout=0.3, log_path=log)
    started = time.monotonic()
    hanging.on_event("dead", job, None)
    assert time.monotonic() - started < 2, "the worker is never blocked"
    wait_for(lambda: "timed out after 0.3 s" in log.read_text())
    missing_shell = CommandNotifier("true", timeout=1, log_path=log, shell="/no/such/sh")
    missing_shell.on_event("dead", job, None)
    assert "could not start" in log.read_text()


def test_handler_that_ignores_stdin_does_not_block(tmp_path: Path) -> None:
    log = tmp_path / "dlq-handler.log"
    job, _ = dead_job()
    big = job.replace(last_error="x" * 500_000)
    handler = CommandNotifier("sleep 0.1", timeout=5, log_path=log)
    started = time.monotonic()
    handler.on_event("dead", big, None)
    assert time.monotonic() - started < 2
    handler.close()
    assert "finished" in log.read_text()


def test_other_events_run_it_when_asked_for(tmp_path: Path) -> None:
    out = tmp_path / "events.jsonl"
    log = tmp_path / "dlq-handler.log"
    handler = CommandNotifier(f'cat >> {out}; echo "$QUEUECTL_EVENT" >> {out}.names',
                              timeout=5, log_path=log, events=frozenset({"lost", "dead"}))
    plugins = build_plugins()
    plugins.add_notifier(plugins.notifier("command"), handler)
    assert plugins.has_event_listeners(), "it wants more than dead: no claim chaining"
    job, _ = dead_job()
    for event in ("claimed", "lost", "completed", "dead"):
        plugins.job_event(event, job, None)
    plugins.close_notifiers()
    assert sorted(Path(f"{out}.names").read_text().split()) == ["dead", "lost"]


def test_a_notifier_for_dead_jobs_only_lets_workers_chain_claims() -> None:
    plugins = build_plugins()
    plugins.add_notifier(plugins.notifier("command"),
                         CommandNotifier("true", timeout=1, log_path=Path("/dev/null")))
    assert plugins.has_listeners() and not plugins.has_event_listeners()


def test_every_factory_gets_the_home_the_backend_and_its_own_logger(tmp_path: Path) -> None:
    from queuectl_core.app import App
    from queuectl_core.config import resolve_config

    (tmp_path / "queuectl.yaml").write_text("backend: json\n")
    app = App(resolve_config(home=str(tmp_path), config=None, backend=None))
    context = app.context_for(app.plugins.notifier("command"))
    assert (context.home, context.backend, context.plugin) == (tmp_path, "json", "command")
    assert context.log.name == "queuectl.plugins.command"
