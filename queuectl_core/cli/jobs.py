"""Job commands: enqueue, status, list (kept small: enqueue and status are the
hot paths; show and dlq are in history.py)."""

from __future__ import annotations

import contextlib
import gc
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

import click

from .. import commands
from ..commands import STATE_NAMES, decode, stored_id
from ..errors import UsageError
from ..timeutil import shown
from .main import State, pass_state
from .output import clip, emit_json, note, number, short_time, table
from .params import DURATION

if TYPE_CHECKING:
    from ..models import Job

FC = TypeVar("FC", bound=Callable[..., Any])

# Old names of what now lives in ``commands`` (other CLI modules import them).
_decode = decode
_stored_id = stored_id

#: How many jobs ``list`` shows unless told otherwise: the newest.
LIST_LIMIT = 100

json_option = click.option("--json", "as_json", is_flag=True,
                           help="Print JSON only (stable format, ISO-8601 times).")


def _check_queue_name(ctx: click.Context, param: click.Parameter, value: str | None
                      ) -> str | None:
    """A ``--queue`` option: one valid queue name (one ``Error:`` line, exit 2)."""
    if value is None:
        return None
    from ..jobspec import queue_name_problem

    problem = queue_name_problem(value)
    if problem is not None:
        raise UsageError(f"queue name {value!r}: {problem}")
    return value


def queue_filter_option(help_text: str) -> Callable[[FC], FC]:
    return click.option("--queue", "-q", "queue_name", metavar="QUEUE",
                        callback=_check_queue_name, help=help_text)


def _read_lines(path: str) -> Iterator[tuple[int, str]]:
    """The non-blank lines of ``path`` ('-': stdin) with their numbers, read
    as they are used (a file of a million jobs is never held whole). The
    file is opened at once, so that one that cannot be read is reported
    before anything else."""
    if path == "-":
        stream: BinaryIO = sys.stdin.buffer
        where = "stdin"
    else:
        try:
            stream = open(path, "rb")  # noqa: SIM115 - closed by the generator
        except OSError as exc:
            raise UsageError(f"cannot read {shown(path)}: {exc.strerror}") from None
        where = shown(path)

    def lines() -> Iterator[tuple[int, str]]:
        offset = 0
        with contextlib.ExitStack() as stack:
            if stream is not sys.stdin.buffer:
                stack.enter_context(stream)
            # Only \n ends a line (a binary file's lines): str.splitlines()
            # would also split at U+2028, U+2029 and U+0085, which may stand
            # raw inside JSON strings.
            for number, raw in enumerate(stream, 1):
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise UsageError(f"{where}: not valid UTF-8 (byte {offset + exc.start})"
                                     ) from None
                offset += len(raw)
                line = text.removesuffix("\n").removesuffix("\r")
                if line.strip():
                    yield number, line

    return lines()


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector around a bulk load: it makes
    hundreds of thousands of objects and no cycles, and the collector's
    passes over them would take a third of the time."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _env_items(items: tuple[str, ...]) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--env: expected KEY=VALUE, got {item!r}")
        env[key] = value
    return env


def _flag_defaults(queue_name: str | None, timeout: int | None, cwd: str | None,
                   env_items: tuple[str, ...]) -> dict[str, Any]:
    """Job fields given by --queue, --timeout (ms), --cwd and --env."""
    fields: dict[str, Any] = {}
    if queue_name is not None:
        fields["queue"] = queue_name
    if timeout is not None:
        if timeout <= 0:
            raise UsageError("--timeout: must be more than 0")
        fields["timeout"] = timeout / 1000
    if cwd is not None:
        fields["cwd"] = cwd
    if env_items:
        fields["env"] = _env_items(env_items)
    return fields


@click.command()
@click.argument("job_json", required=False, metavar="[JSON]")
@click.option("--file", "file_", metavar="FILE",
              help="Enqueue every line of FILE (JSON lines; '-' for stdin), all or nothing.")
@click.option("--command", "-c", metavar="CMD", help="Shell command (instead of JSON).")
@click.option("--id", "job_id", metavar="ID", help="Job id (default: generated).")
@click.option("--run-at", metavar="TIME",
              help="When to run: ISO-8601 or epoch milliseconds (not seconds).")
@click.option("--delay", type=DURATION, metavar="DURATION",
              help="Run after a delay, e.g. 30s, 5m, 1h30m.")
@click.option("--max-retries", type=int, metavar="N", help="Retries before the DLQ.")
@click.option("--priority", type=int, metavar="N", help="Higher runs first (default 0).")
@click.option("--queue", "-q", "queue_name", metavar="QUEUE",
              help="Queue to put the job in (default: default).")
@click.option("--timeout", type=DURATION, metavar="DURATION",
              help="Kill the job if an attempt runs longer: seconds, or e.g. 30s, 5m, 1h30m.")
@click.option("--cwd", metavar="DIR",
              help="Directory to run in (default: the current directory).")
@click.option("--env", "env_items", multiple=True, metavar="KEY=VALUE",
              help="Set an environment variable for the job (repeatable).")
@click.option("--after", metavar="ID,ID", help="Run after these jobs (comma-separated ids).")
@click.option("--after-mode", type=click.Choice(["success", "finished"]),
              help="success: run once they all completed (default); finished: once they "
                   "all ended, whatever the outcome.")
@click.option("--concurrency-key", metavar="KEY",
              help="Run at most N jobs with KEY at once (queuectl limit set KEY N; 1 if unset).")
@click.option("--unique-key", metavar="KEY",
              help="Refuse the job while another job with KEY is not finished.")
@click.option("--if-exists", type=click.Choice(["error", "skip"]), default="error",
              show_default=True,
              help="When the unique key is held: fail (exit 1), or print the holder's id "
                   "and exit 0.")
@json_option
@pass_state
def enqueue(state: State, job_json: str | None, file_: str | None, command: str | None,
            job_id: str | None, run_at: str | None, delay: int | None,
            max_retries: int | None, priority: int | None, queue_name: str | None,
            timeout: int | None, cwd: str | None, env_items: tuple[str, ...],
            after: str | None, after_mode: str | None, concurrency_key: str | None,
            unique_key: str | None, if_exists: str, as_json: bool) -> None:
    """Add a job to the queue.

    \b
    JSON fields: command (required), id, run_at (epoch ms, 2001 or later, or
    ISO-8601), max_retries, priority, queue, timeout (seconds, or e.g. "90s"),
    cwd, env (an object of strings), retry (policy, backoff_base, max_delay,
    jitter), after (job ids), after_mode (success or finished),
    concurrency_key, unique_key. Examples:
      queuectl enqueue '{"id":"job1","command":"echo hi"}'
      queuectl enqueue --command 'make backup' --delay 10m --max-retries 5
      queuectl enqueue -c './render.sh' --queue render --timeout 2h --env SCALE=2
      queuectl enqueue --file jobs.jsonl      # one JSON object per line
      queuectl enqueue -c './convert.sh' --id convert --after fetch

    A job runs in the directory enqueue is called from unless it gives its
    own cwd (a relative one is taken from there). --queue, --timeout, --cwd
    and --env also apply to JSON and --file jobs that do not set the field
    themselves.

    Prints 'Job enqueued with ID: <id>'. A duplicate id is rejected (exit 1)
    and the stored job stays as it was.
    """
    flags = {"--id": job_id, "--run-at": run_at, "--delay": delay,
             "--max-retries": max_retries, "--priority": priority, "--after": after,
             "--after-mode": after_mode, "--concurrency-key": concurrency_key,
             "--unique-key": unique_key}
    sources = [s for s in (job_json is not None, file_ is not None, command is not None) if s]
    if len(sources) != 1:
        raise UsageError("give exactly one of: a JSON argument, --file FILE, or --command CMD")
    used_flags = [k for k, v in flags.items() if v is not None]
    if command is None and used_flags:
        raise UsageError(f"{', '.join(used_flags)} can only be used with --command")
    if run_at is not None and delay is not None:
        raise UsageError("use --run-at or --delay, not both")
    defaults = _flag_defaults(queue_name, timeout, cwd, env_items)

    skip = if_exists == "skip"
    if job_json is not None:
        specs = commands.spec_from_json(job_json, defaults)
    elif file_ is not None:
        lines = _read_lines(file_)
        with _collector_paused():
            commands.enqueue_lines(
                state.app(), lines, file_, defaults, as_json=as_json,
                progress=sys.stderr.isatty(), skip_held=skip,
                reread=None if file_ == "-" else lambda: _read_lines(file_))
        return
    else:
        assert command is not None
        extra: dict[str, Any] = {}
        if after is not None:
            extra["after"] = [p.strip() for p in after.split(",") if p.strip()]
        for key, value in (("after_mode", after_mode), ("concurrency_key", concurrency_key),
                           ("unique_key", unique_key)):
            if value is not None:
                extra[key] = value
        specs = commands.spec_from_command(
            command, defaults, job_id=job_id, run_at=run_at, delay=delay,
            max_retries=max_retries, priority=priority, extra=extra)
    commands.enqueue(state.app(), specs, as_json=as_json, skip_held=skip)


@click.command()
@queue_filter_option("Count only the jobs of this queue.")
@json_option
@pass_state
def status(state: State, queue_name: str | None, as_json: bool) -> None:
    """Count jobs in each state (dead = in the DLQ), live workers, and the
    paused queues.

    A worker counts as active while its heartbeat is fresher than the lease
    length (lease_seconds). With --queue, the counts are that queue's; the
    workers are those of the whole store.
    """
    commands.status(state.app(), queue_name, as_json=as_json)


def _job_rows(jobs: list[Job]) -> list[list[str]]:
    return [[j.id, j.state.value, j.queue, f"{j.attempts}/{j.max_retries + 1}",
             str(j.priority), short_time(j.to_json()["run_at"]), clip(j.command, 40),
             clip(j.last_error, 50)]
            for j in jobs]


def _state_option(value: str | None) -> Any:
    from ..models import JobState

    return None if value is None else JobState(value)


@click.command("list")
@click.option("--state", "state_name", type=click.Choice(STATE_NAMES),
              help="Only jobs in this state.")
@queue_filter_option("Only jobs of this queue.")
@click.option("--limit", type=click.IntRange(min=0), default=LIST_LIMIT, show_default=True,
              metavar="N", help="The newest N jobs; 0: all of them.")
@click.option("--schedule", "schedule_name", metavar="NAME",
              help="Only jobs made by this recurring schedule.")
@json_option
@pass_state
def list_cmd(state: State, state_name: str | None, queue_name: str | None,
             limit: int, as_json: bool, schedule_name: str | None = None) -> None:
    """List the newest jobs, in enqueue order (all states and queues unless
    --state, --queue or --schedule is given).

    ATTEMPTS shows attempts made / attempts allowed (max_retries + 1).
    """
    app = state.app()
    wanted = _state_option(state_name)
    more = 0
    if schedule_name is not None:
        made = [j for j in app.ledger.list_newest(wanted, None, queue=queue_name)
                if j.schedule == schedule_name]
        jobs = made if limit == 0 else made[:limit]
        more = len(made) - len(jobs)
        jobs.reverse()
    elif limit == 0:
        jobs = app.ledger.list_jobs(wanted, queue=queue_name)
    else:
        jobs = app.ledger.list_newest(wanted, limit, queue=queue_name)
        jobs.reverse()
        if len(jobs) == limit:
            counts = app.ledger.counts(queue_name)
            more = (sum(counts.values()) if wanted is None else counts[wanted]) - limit
    if as_json:
        emit_json([j.to_json() for j in jobs])
    elif not jobs:
        what = " ".join(w for w in (state_name, "jobs") if w)
        where = "" if queue_name is None else f" in queue '{queue_name}'"
        if schedule_name is not None:
            where += f" made by schedule '{schedule_name}'"
        click.echo(f"No {what}{where}." if state_name or where else "No jobs.")
    else:
        table(["ID", "STATE", "QUEUE", "ATTEMPTS", "PRIO", "RUN AT", "COMMAND", "LAST ERROR"],
              _job_rows(jobs))
    if more > 0:  # on stderr: stdout stays the table, or clean JSON
        note(f"{more} older {'job is' if more == 1 else 'jobs are'} not shown"
             " (--limit N shows the newest N, --limit 0 all)")


__all__ = ["enqueue", "list_cmd", "number", "status"]
