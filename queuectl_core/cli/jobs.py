"""Job commands: enqueue, status, list, show, dlq."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..errors import JobNotFoundError, UsageError
from ..timeutil import shown
from .main import State, pass_state
from .output import clip, emit_json, number, short_time, table

if TYPE_CHECKING:
    from ..models import Job, NewJob

STATE_NAMES = ("pending", "processing", "completed", "failed", "dead")

json_option = click.option("--json", "as_json", is_flag=True,
                           help="Print JSON only (stable format, ISO-8601 times).")


def _decode(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{where}: invalid JSON: {exc.msg} (line {exc.lineno} column "
                         f"{exc.colno})") from None
    except RecursionError:
        raise UsageError(f"{where}: JSON is nested too deeply") from None
    except ValueError as exc:  # e.g. an integer literal of over 4300 digits
        raise UsageError(f"{where}: invalid JSON: {exc}") from None


def _stored_id(job_id: str) -> str:
    """An id typed on the command line, as it could be stored. Bytes that
    are not UTF-8 (decoded by Python as lone surrogates) can be in no stored
    id, so such an id is simply not found."""
    try:
        job_id.encode("utf-8")
    except UnicodeEncodeError:
        raise JobNotFoundError(job_id) from None
    return job_id


def _read_lines(path: str) -> list[tuple[int, str]]:
    if path == "-":
        data = sys.stdin.buffer.read()
        where = "stdin"
    else:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read {shown(path)}: {exc.strerror}") from None
        where = shown(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{where}: not valid UTF-8 (byte {exc.start})") from None
    # Only \n ends a line: str.splitlines() would also split at U+2028,
    # U+2029 and U+0085, which may stand raw inside JSON strings.
    lines = (line.removesuffix("\r") for line in text.split("\n"))
    return [(n, line) for n, line in enumerate(lines, 1) if line.strip()]


@click.command()
@click.argument("job_json", required=False, metavar="[JSON]")
@click.option("--file", "file_", metavar="FILE",
              help="Enqueue every line of FILE (JSON lines; '-' for stdin), all or nothing.")
@click.option("--command", "-c", metavar="CMD", help="Shell command (instead of JSON).")
@click.option("--id", "job_id", metavar="ID", help="Job id (default: generated).")
@click.option("--run-at", metavar="TIME", help="When to run: ISO-8601 or epoch milliseconds.")
@click.option("--delay", metavar="DURATION", help="Run after a delay, e.g. 30s, 5m, 2h.")
@click.option("--max-retries", type=int, metavar="N", help="Retries before the DLQ.")
@click.option("--priority", type=int, metavar="N", help="Higher runs first (default 0).")
@json_option
@pass_state
def enqueue(state: State, job_json: str | None, file_: str | None, command: str | None,
            job_id: str | None, run_at: str | None, delay: str | None,
            max_retries: int | None, priority: int | None, as_json: bool) -> None:
    """Add a job to the queue.

    \b
    JSON fields: command (required), id, run_at (epoch ms or ISO-8601),
    max_retries, priority. Examples:
      queuectl enqueue '{"id":"job1","command":"echo hi"}'
      queuectl enqueue --command 'make backup' --delay 10m --max-retries 5
      queuectl enqueue --file jobs.jsonl      # one JSON object per line

    Prints 'Job enqueued with ID: <id>'. A duplicate id is rejected (exit 1)
    and the stored job stays as it was.
    """
    from ..models import parse_job_spec
    from ..timeutil import now_ms, parse_duration_ms, parse_timestamp_ms

    flags = {"--id": job_id, "--run-at": run_at, "--delay": delay,
             "--max-retries": max_retries, "--priority": priority}
    sources = [s for s in (job_json is not None, file_ is not None, command is not None) if s]
    if len(sources) != 1:
        raise UsageError("give exactly one of: a JSON argument, --file FILE, or --command CMD")
    used_flags = [k for k, v in flags.items() if v is not None]
    if command is None and used_flags:
        raise UsageError(f"{', '.join(used_flags)} can only be used with --command")
    if run_at is not None and delay is not None:
        raise UsageError("use --run-at or --delay, not both")

    if job_json is not None:
        specs = [parse_job_spec(_decode(job_json, "job"))]
    elif file_ is not None:
        specs = []
        for lineno, line in _read_lines(file_):
            try:
                spec = parse_job_spec(_decode(line, f"line {lineno}"))
                if spec.run_at is not None:
                    parse_timestamp_ms(spec.run_at)  # report a bad run_at with its line
                specs.append(spec)
            except UsageError as exc:
                msg = str(exc)
                raise UsageError(msg if msg.startswith("line ") else f"line {lineno}: {msg}"
                                 ) from None
        if not specs:
            raise UsageError(f"{shown(file_)}: no jobs found")
    else:
        data: dict[str, Any] = {"command": command}
        if job_id is not None:
            data["id"] = job_id
        if run_at is not None:
            digits = run_at.strip()
            data["run_at"] = (int(digits) if digits.isascii() and digits.isdigit()
                              and len(digits) <= 20 else run_at)
        if delay is not None:
            data["run_at"] = now_ms() + parse_duration_ms(delay)
        if max_retries is not None:
            data["max_retries"] = max_retries
        if priority is not None:
            data["priority"] = priority
        specs = [parse_job_spec(data)]

    app = state.app()
    storage = app.storage
    settings = app.settings()
    now = now_ms()
    jobs: list[NewJob] = [s.to_new_job(default_max_retries=settings.max_retries, now=now)
                          for s in specs]
    storage.enqueue(jobs)
    from ..wakeup import notify

    notify(app.config.home)
    if as_json:
        emit_json({"enqueued": len(jobs), "ids": [j.id for j in jobs]})
    elif len(jobs) == 1:
        click.echo(f"Job enqueued with ID: {jobs[0].id}")
    else:
        click.echo(f"Enqueued {len(jobs)} jobs.")
    plugins = app.plugins
    if plugins.has_listeners():
        for new in jobs:
            stored = storage.get(new.id)
            if stored is not None:
                plugins.job_event("enqueued", stored, None)


def _active_workers(state: State) -> int:
    from ..timeutil import now_ms

    app = state.app()
    lease_ms = app.settings().lease_seconds * 1000
    now = now_ms()
    return sum(1 for w in app.storage.list_workers() if w.heartbeat_at >= now - lease_ms)


@click.command()
@json_option
@pass_state
def status(state: State, as_json: bool) -> None:
    """Count jobs in each state (dead = in the DLQ) and live workers.

    A worker counts as active while its heartbeat is fresher than the lease
    length (lease_seconds).
    """
    app = state.app()
    counts = {s.value: n for s, n in app.storage.counts().items()}
    active = _active_workers(state)
    if as_json:
        emit_json({**{name: counts.get(name, 0) for name in STATE_NAMES},
                   "active_workers": active})
        return
    click.echo(f"Queue status ({app.storage.describe()})")
    for name in STATE_NAMES:
        label = "dead (DLQ)" if name == "dead" else name
        click.echo(f"  {label:<12} {counts.get(name, 0):>8}")
    click.echo(f"Active workers: {active}")


def _job_rows(jobs: list[Job]) -> list[list[str]]:
    return [[j.id, j.state.value, f"{j.attempts}/{j.max_retries + 1}", str(j.priority),
             short_time(j.to_json()["run_at"]), clip(j.command, 40), clip(j.last_error, 50)]
            for j in jobs]


def _state_option(value: str | None) -> Any:
    from ..models import JobState

    return None if value is None else JobState(value)


@click.command("list")
@click.option("--state", "state_name", type=click.Choice(STATE_NAMES),
              help="Only jobs in this state.")
@click.option("--limit", type=click.IntRange(min=1), metavar="N", help="At most N jobs.")
@json_option
@pass_state
def list_cmd(state: State, state_name: str | None, limit: int | None, as_json: bool) -> None:
    """List jobs in enqueue order (all states unless --state is given).

    ATTEMPTS shows attempts made / attempts allowed (max_retries + 1).
    """
    app = state.app()
    jobs = app.storage.list_jobs(_state_option(state_name), limit)
    if as_json:
        emit_json([j.to_json() for j in jobs])
        return
    if not jobs:
        click.echo("No jobs." if state_name is None else f"No {state_name} jobs.")
        return
    table(["ID", "STATE", "ATTEMPTS", "PRIO", "RUN AT", "COMMAND", "LAST ERROR"],
          _job_rows(jobs))


@click.command()
@click.argument("job_id", metavar="ID")
@json_option
@pass_state
def show(state: State, job_id: str, as_json: bool) -> None:
    """Show one job with the record of every attempt."""
    app = state.app()
    job = app.storage.get(_stored_id(job_id))
    if job is None:
        raise JobNotFoundError(job_id)
    attempts = app.storage.attempts(job_id)
    data = job.to_json()
    if as_json:
        emit_json({**data, "attempts_history": [a.to_json() for a in attempts]})
        return
    click.echo(f"Job {job.id}")
    fields = [
        ("command", job.command), ("state", job.state.value),
        ("attempts", f"{job.attempts} (max_retries {job.max_retries})"),
        ("priority", str(job.priority)), ("run_at", data["run_at"]),
        ("created_at", data["created_at"]), ("updated_at", data["updated_at"]),
        ("started_at", data["started_at"]), ("finished_at", data["finished_at"]),
        ("worker", job.worker_id), ("exit_code", job.exit_code),
        ("last_error", job.last_error),
    ]
    for key, value in fields:
        click.echo(f"  {key + ':':<13}{'-' if value is None else value}")
    if not attempts:
        click.echo("No attempts yet.")
        return
    click.echo("Attempts:")
    rows = []
    for a in attempts:
        aj = a.to_json()
        duration = "-" if aj["duration_ms"] is None else f"{aj['duration_ms'] / 1000:.3f}s"
        result = ("-" if a.exit_code is None and a.signal is None
                  else f"signal {a.signal}" if a.signal is not None else f"exit {a.exit_code}")
        rows.append([str(a.number), short_time(aj["started_at"]), duration, a.outcome, result,
                     a.worker_id, clip(a.error, 60)])
    table(["#", "STARTED", "DURATION", "OUTCOME", "RESULT", "WORKER", "ERROR"], rows)


# ------------------------------------------------------------------ dlq

@click.group()
def dlq() -> None:
    """The dead letter queue: jobs that used up their retries (state dead)."""


@dlq.command("list")
@click.option("--limit", type=click.IntRange(min=1), metavar="N", help="At most N jobs.")
@json_option
@pass_state
def dlq_list(state: State, limit: int | None, as_json: bool) -> None:
    """List dead jobs with their last error."""
    from ..models import JobState

    jobs = state.app().storage.list_jobs(JobState.DEAD, limit)
    if as_json:
        emit_json([j.to_json() for j in jobs])
        return
    if not jobs:
        click.echo("The dead letter queue is empty.")
        return
    table(["ID", "ATTEMPTS", "DIED AT", "COMMAND", "LAST ERROR"],
          [[j.id, str(j.attempts), short_time(j.to_json()["updated_at"]), clip(j.command, 40),
            clip(j.last_error, 60)] for j in jobs])


@dlq.command("retry")
@click.argument("job_id", metavar="ID")
@json_option
@pass_state
def dlq_retry(state: State, job_id: str, as_json: bool) -> None:
    """Move a dead job back to pending: attempts reset to 0, run_at now.

    The job keeps its own max_retries, so it gets the same number of
    attempts again.
    """
    from ..timeutil import now_ms

    app = state.app()
    job = app.storage.dlq_retry(_stored_id(job_id), now_ms())
    from ..wakeup import notify

    notify(app.config.home)
    app.plugins.job_event("dlq_retried", job, None)
    if as_json:
        emit_json(job.to_json())
    else:
        click.echo(f"Job '{job.id}' moved back to queue for retry.")


__all__ = ["dlq", "enqueue", "list_cmd", "number", "show", "status"]
