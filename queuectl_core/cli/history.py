"""Inspecting a job's history: show, and the dead letter queue (dlq list,
show, retry, purge)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click

from ..errors import InvalidStateError, JobNotFoundError, QueuectlError, UsageError
from .control import dry_run_option
from .jobs import _stored_id, json_option, queue_filter_option
from .main import State, pass_state
from .output import (
    clip,
    emit_json,
    error_line,
    number,
    printable,
    seconds_text,
    short_time,
    signal_text,
    table,
)

if TYPE_CHECKING:
    from ..app import App
    from ..models import Attempt, Job


def _result_text(a: Attempt) -> str:
    if a.signal is not None:
        text = f"signal {signal_text(a.signal)}"
        return text if a.exit_code is None else f"{text}, exit {a.exit_code}"
    return "-" if a.exit_code is None else f"exit {a.exit_code}"


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


def _show_job(app: App, job_id: str, as_json: bool, *, require_dead: bool = False) -> None:
    job = app.ledger.get(_stored_id(job_id))
    if job is None:
        raise JobNotFoundError(job_id)
    if require_dead and job.state.value != "dead":
        raise InvalidStateError(f"job {job_id!r} is {job.state.value}, not dead "
                                "(not in the dead letter queue)")
    attempts = app.ledger.attempts(job.id)
    data = job.to_json()
    relatives = app.ledger.relatives(job)
    if as_json:
        emit_json({**data, **relatives, "attempts_history": [a.to_json() for a in attempts]})
        return
    click.echo(f"Job {job.id}")
    fields: list[tuple[str, object]] = [
        ("command", job.command), ("state", job.state.value), ("queue", job.queue),
        ("attempts", f"{job.attempts} (max_retries {job.max_retries})"),
        ("priority", str(job.priority)),
        ("timeout", None if job.timeout is None else f"{number(job.timeout)}s"),
        ("cwd", job.cwd), ("env", None if not job.env else _compact(job.env)),
        ("retry", None if not job.retry else _compact(job.retry)),
        ("run_at", data["run_at"]), ("created_at", data["created_at"]),
        ("updated_at", data["updated_at"]), ("started_at", data["started_at"]),
        ("finished_at", data["finished_at"]),
    ]
    if job.cancel_requested_at is not None:
        fields.append(("cancel_requested_at", data["cancel_requested_at"]))
    fields += [("worker", job.worker_id), ("exit_code", job.exit_code),
               ("last_error", job.last_error)]
    for key, label in (("parents", f"after ({job.after_mode})"), ("children", "before")):
        if relatives[key]:
            fields.append((label, ", ".join(f"{r['id']} ({r['state']})"
                                            for r in relatives[key])))
    fields += [(key, getattr(job, key)) for key in ("concurrency_key", "unique_key")
               if getattr(job, key) is not None]
    width = max(len(key) for key, _ in fields) + 2
    for key, value in fields:
        text = "-" if value is None else str(value)
        # A command of several lines keeps them, indented under the first;
        # control characters anywhere are shown as escapes.
        lines = printable(text, keep="\n\t").split("\n") if key == "command" else [
            printable(text)]
        click.echo(f"  {key + ':':<{width}}{lines[0]}")
        for line in lines[1:]:
            click.echo(f"  {'':<{width}}{line}")
    if not attempts:
        click.echo("No attempts yet.")
        return
    click.echo("Attempts:")
    rows = []
    for a in attempts:
        aj = a.to_json()
        rows.append([str(a.number), short_time(aj["started_at"]),
                     short_time(aj["finished_at"]), seconds_text(aj["duration_ms"]),
                     a.outcome, _result_text(a), a.worker_id, clip(a.error, 60)])
    table(["#", "STARTED", "FINISHED", "DURATION", "OUTCOME", "RESULT", "WORKER", "ERROR"],
          rows)


@click.command()
@click.argument("job_id", metavar="ID")
@json_option
@pass_state
def show(state: State, job_id: str, as_json: bool) -> None:
    """Show one job with the record of every attempt.

    Each attempt: number, start, end, duration, outcome, exit code or
    signal, worker and error. Its output: 'queuectl logs ID --attempt N'.
    """
    _show_job(state.app(), job_id, as_json)


# ------------------------------------------------------------------ dlq

@click.group()
def dlq() -> None:
    """The dead letter queue: jobs that used up their retries (state dead).

    \b
    queuectl dlq list                # dead jobs with their last error
    queuectl dlq show ID             # one dead job with every attempt
    queuectl dlq retry ID... | --all # back to pending, with a fresh budget
    queuectl dlq purge ID... | --all # delete them and their output
    """


@dlq.command("list")
@queue_filter_option("Only dead jobs of this queue.")
@click.option("--limit", type=click.IntRange(min=1), metavar="N", help="At most N jobs.")
@json_option
@pass_state
def dlq_list(state: State, queue_name: str | None, limit: int | None, as_json: bool) -> None:
    """List dead jobs with their last error."""
    from ..models import JobState

    jobs = state.app().ledger.list_jobs(JobState.DEAD, limit, queue=queue_name)
    if as_json:
        emit_json([j.to_json() for j in jobs])
        return
    if not jobs:
        click.echo("The dead letter queue is empty.")
        return
    table(["ID", "QUEUE", "ATTEMPTS", "DIED AT", "COMMAND", "LAST ERROR"],
          [[j.id, j.queue, str(j.attempts), short_time(j.to_json()["updated_at"]),
            clip(j.command, 40), clip(j.last_error, 60)] for j in jobs])


@dlq.command("show")
@click.argument("job_id", metavar="ID")
@json_option
@pass_state
def dlq_show(state: State, job_id: str, as_json: bool) -> None:
    """Show a dead job with every attempt.

    Like 'show', but exits 1 if the job is not dead."""
    _show_job(state.app(), job_id, as_json, require_dead=True)


def _ids_or_all(job_ids: tuple[str, ...], all_: bool) -> None:
    if all_ and job_ids:
        raise UsageError("give job ids or --all, not both")
    if not all_ and not job_ids:
        raise UsageError("give one or more job ids, or --all")


def retry_dead(app: App, job_id: str, *, wake: bool = True) -> Job:
    """Move one dead job back to pending (``Ledger.dlq_retry``) and tell
    the plugins (``dlq retry`` and the web dashboard's retry); ``wake``:
    wake this machine's idle workers. Raises JobNotFoundError, or
    InvalidStateError for a job that is not dead."""
    from ..timeutil import now_ms
    from ..wakeup import notify

    job = app.ledger.dlq_retry(job_id, now_ms())
    app.plugins.job_event("dlq_retried", job, None)
    if wake:
        notify(app.config.home)
    return job


@dlq.command("retry")
@click.argument("job_ids", metavar="ID...", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Retry every dead job.")
@json_option
@pass_state
def dlq_retry(state: State, job_ids: tuple[str, ...], all_: bool, as_json: bool) -> None:
    """Move dead jobs back to pending: attempts reset to 0, run_at now.

    Each job keeps its own max_retries, so it gets the same number of
    attempts again, and its attempt history. Several ids are retried one by
    one; an id that is unknown or not dead is reported and the others are
    still retried (exit 1 at the end). With --json: the job object for one
    ID, an array of them for several ids or --all.
    """
    from ..models import JobState
    from ..wakeup import notify

    _ids_or_all(job_ids, all_)
    app = state.app()
    storage = app.ledger
    ids = ([j.id for j in storage.list_jobs(JobState.DEAD)] if all_
           else list(dict.fromkeys(job_ids)))
    retried: list[Job] = []
    failed = False
    for job_id in ids:
        try:
            job = retry_dead(app, _stored_id(job_id), wake=False)
        except (JobNotFoundError, InvalidStateError) as exc:
            if all_:  # changed since listed (retried or purged by someone else)
                continue
            if len(ids) == 1:
                raise
            error_line(str(exc))
            failed = True
            continue
        retried.append(job)
        if not as_json:
            click.echo(f"Job '{job.id}' moved back to queue for retry.")
    if retried:
        notify(app.config.home)
    if as_json:
        emit_json(retried[0].to_json() if len(job_ids) == 1 and retried and not all_
                  else [j.to_json() for j in retried])
    elif all_:
        click.echo(f"Moved {len(retried)} dead job(s) back to the queue."
                   if retried else "The dead letter queue is empty.")
    if failed:
        raise click.exceptions.Exit(1)


@dlq.command("purge")
@click.argument("job_ids", metavar="ID...", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Purge every dead job.")
@dry_run_option
@json_option
@pass_state
def dlq_purge(state: State, job_ids: tuple[str, ...], all_: bool, dry_run: bool,
              as_json: bool) -> None:
    """Delete dead jobs, their attempt history and their output.

    Irreversible (--dry-run only says which). The output deleted is the
    one kept on this machine.

    An id that is unknown or not dead is reported and nothing happens to
    it (exit 1 at the end); the other ids are still purged.
    """
    from ..models import JobState
    from .control import PURGE_BATCH, remove_job_logs, say_would_purge

    _ids_or_all(job_ids, all_)
    app = state.app()
    if not dry_run:
        from ..security import check_home_trusted

        check_home_trusted(app, "purge")
    storage = app.ledger
    failed = False
    gone: list[str] = []
    if all_:
        from ..timeutil import now_ms

        # Every job dead before this command started, a batch at a time.
        cutoff = now_ms() + 1
        if dry_run:
            gone = [j.id for j in storage.purgeable(states=[JobState.DEAD],
                                                    finished_before=cutoff)]
        else:
            while batch := storage.purge(states=[JobState.DEAD], finished_before=cutoff,
                                         limit=PURGE_BATCH):
                gone += batch
                remove_job_logs(app, batch)
    else:
        wanted = list(dict.fromkeys(_stored_id_or_none(i) for i in job_ids))
        valid = [i for i in wanted if i is not None]
        if dry_run:
            gone = [j.id for j in storage.purgeable(states=[JobState.DEAD], ids=valid)]
        else:
            gone = storage.purge(states=[JobState.DEAD], ids=valid) if valid else []
            remove_job_logs(app, gone)
        purged = set(gone)
        for job_id in dict.fromkeys(job_ids):
            if job_id in purged:
                continue
            job = storage.get(job_id) if _stored_id_or_none(job_id) is not None else None
            if job is None:
                error_line(str(JobNotFoundError(job_id)))
            else:
                error_line(f"job {job_id!r} is {job.state.value}, not dead; not purged")
            failed = True
    if dry_run:
        say_would_purge(gone, "dead job(s)", as_json)
    elif as_json:
        emit_json({"purged": len(gone), "ids": gone})
    else:
        click.echo(f"Purged {len(gone)} dead job(s).")
    if failed:
        raise click.exceptions.Exit(1)


def _stored_id_or_none(job_id: str) -> str | None:
    try:
        return _stored_id(job_id)
    except QueuectlError:
        return None


__all__ = ["dlq", "show"]
