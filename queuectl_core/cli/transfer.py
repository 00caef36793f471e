"""export / import: move a queue between stores (e.g. SQLite to PostgreSQL)
as JSON lines, one job per line with its attempt history."""

from __future__ import annotations

import json
import os
import sys
from typing import IO, TYPE_CHECKING, Any

import click

from ..commands import STATE_NAMES
from ..errors import UsageError
from .jobs import _decode, _read_lines, json_option
from .main import State, pass_state
from .output import emit_json

if TYPE_CHECKING:
    from ..models import Attempt, Job



@click.command("export")
@click.option("--output", "-o", metavar="FILE", help="Write to FILE (created 0600) instead "
              "of stdout.")
@click.option("--state", "state_name", type=click.Choice(STATE_NAMES),
              help="Only jobs in this state.")
@pass_state
def export_cmd(state: State, output: str | None, state_name: str | None) -> None:
    """Write every job, with its attempt history, as JSON lines.

    Each line is the job object of 'show ID --json' (ISO-8601 times), so the
    file is readable with jq and can be loaded into any backend with
    'queuectl import':

    \b
      queuectl export -o queue.jsonl
      queuectl --backend postgres import queue.jsonl
    """
    from ..models import JobState

    storage = state.app().ledger
    jobs = storage.list_jobs(None if state_name is None else JobState(state_name))
    if output is None:
        _write(sys.stdout, storage, jobs)
        return
    fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        _write(fh, storage, jobs)
    click.echo(f"Exported {len(jobs)} jobs to {output}.", err=True)


def _write(fh: IO[str], storage: Any, jobs: list[Job]) -> None:
    for job in jobs:
        record = job.to_json()
        record["attempts_history"] = [a.to_json() for a in storage.attempts(job.id)]
        fh.write(json.dumps(record, ensure_ascii=False) + "\n")


def _parse(record: Any, where: str) -> tuple[Job, list[Attempt]]:
    from ..models import Attempt, Job, job_problem, record_from_dict
    from ..timeutil import parse_timestamp_ms

    if not isinstance(record, dict):
        raise UsageError(f"{where}: expected a job object")
    data = dict(record)
    history = data.pop("attempts_history", [])
    if not isinstance(history, list):
        raise UsageError(f"{where}: attempts_history must be a list")
    try:
        for key in Job.time_fields():
            if data.get(key) is not None:
                data[key] = parse_timestamp_ms(data[key], key)
        attempts = []
        for item in history:
            if not isinstance(item, dict):
                raise UsageError(f"{where}: an attempt is not an object")
            a = {k: v for k, v in item.items() if k != "duration_ms"}
            for key in Attempt.time_fields():
                if a.get(key) is not None:
                    a[key] = parse_timestamp_ms(a[key], key)
            attempts.append(record_from_dict(Attempt, a))
        if "claim_token" in data:
            raise ValueError("claim_token: unknown field")
        job = record_from_dict(Job, data)
    except (UsageError, ValueError) as exc:
        raise UsageError(f"{where}: {exc}") from None
    if any(a.job_id != job.id for a in attempts):
        raise UsageError(f"{where}: an attempt belongs to another job")
    problem = job_problem(job)
    if problem is not None:
        raise UsageError(f"{where}: {problem}")
    # A job that was running when exported has no worker here: the Ledger
    # settles it as after a crash (transitions.arrived).
    return job, attempts


@click.command("import")
@click.argument("file", metavar="FILE")
@json_option
@pass_state
def import_cmd(state: State, file: str, as_json: bool) -> None:
    """Load jobs written by 'queuectl export' (FILE, or - for stdin).

    All or nothing: one invalid line or one id that already exists, and
    nothing is imported. Jobs keep their state, attempts, max_retries,
    queue, timeout, cwd, env, retry and history; jobs that were running
    when exported come back as failed and run again (dead if they had no
    attempts left, cancelled if a cancel had been requested).
    """
    from ..wakeup import notify

    records = [_parse(_decode(line, f"line {n}"), f"line {n}")
               for n, line in _read_lines(file)]
    if not records:
        raise UsageError(f"{file}: no jobs found")
    app = state.app()
    app.ledger.import_jobs(records)
    notify(app.config.home)
    if as_json:
        emit_json({"imported": len(records), "ids": [job.id for job, _ in records]})
    else:
        click.echo(f"Imported {len(records)} jobs.")
