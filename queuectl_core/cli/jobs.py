"""Job commands: enqueue, status, list (kept small: enqueue and status are the
hot paths; show and dlq are in history.py)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ..errors import JobNotFoundError, UsageError
from ..timeutil import shown
from . import fast
from .main import State, pass_state
from .output import clip, emit_json, number, short_time, table

if TYPE_CHECKING:
    from ..app import App
    from ..models import Job, JobSpec, NewJob

FC = TypeVar("FC", bound=Callable[..., Any])

#: Every state, in display order (defined once, in the light fast-path module).
STATE_NAMES = fast.STATE_NAMES

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


def _env_items(items: tuple[str, ...]) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--env: expected KEY=VALUE, got {item!r}")
        env[key] = value
    return env


def _flag_defaults(queue_name: str | None, timeout: str | None, cwd: str | None,
                   env_items: tuple[str, ...]) -> dict[str, Any]:
    """Job fields given by --queue, --timeout, --cwd and --env."""
    from ..timeutil import parse_duration_ms

    fields: dict[str, Any] = {}
    if queue_name is not None:
        fields["queue"] = queue_name
    if timeout is not None:
        try:
            ms = parse_duration_ms(timeout)
        except UsageError as exc:
            raise UsageError(f"--timeout: {exc}") from None
        if ms <= 0:
            raise UsageError(f"--timeout: must be more than 0, got {timeout!r}")
        fields["timeout"] = ms / 1000
    if cwd is not None:
        fields["cwd"] = cwd
    if env_items:
        fields["env"] = _env_items(env_items)
    return fields


def _with_defaults(data: Any, defaults: dict[str, Any]) -> Any:
    """A decoded job object with the flag fields filled in where the job
    does not give its own (its own ``env`` entries win over --env ones)."""
    if not defaults or not isinstance(data, dict):
        return data
    merged = {**{k: v for k, v in defaults.items() if k != "env"}, **data}
    if "env" in defaults:
        own = data.get("env")
        merged["env"] = {**defaults["env"], **own} if isinstance(own, dict) else (
            defaults["env"] if own is None else own)
    return merged


def _check_policies(app: App, specs: list[tuple[str, JobSpec]]) -> None:
    """A job's ``retry.policy`` must name an installed backoff policy."""
    from ..registry import normalize_name

    names = app.plugins.backoff_policies()
    for where, spec in specs:
        policy = (spec.retry or {}).get("policy")
        if policy is None:
            continue
        try:
            key = normalize_name(policy)
        except ValueError:
            key = policy
        if key not in names:
            choices = ", ".join(sorted(names)) or "none installed"
            raise UsageError(f"{where}invalid job: retry.policy: unknown backoff policy "
                             f"{policy!r}; choose one of: {choices}")


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
@click.option("--queue", "-q", "queue_name", metavar="QUEUE",
              help="Queue to put the job in (default: default).")
@click.option("--timeout", metavar="DURATION",
              help="Kill the job if an attempt runs longer: seconds, or e.g. 30s, 5m, 2h.")
@click.option("--cwd", metavar="DIR",
              help="Directory to run in (default: the current directory).")
@click.option("--env", "env_items", multiple=True, metavar="KEY=VALUE",
              help="Set an environment variable for the job (repeatable).")
@json_option
@pass_state
def enqueue(state: State, job_json: str | None, file_: str | None, command: str | None,
            job_id: str | None, run_at: str | None, delay: str | None,
            max_retries: int | None, priority: int | None, queue_name: str | None,
            timeout: str | None, cwd: str | None, env_items: tuple[str, ...],
            as_json: bool) -> None:
    """Add a job to the queue.

    \b
    JSON fields: command (required), id, run_at (epoch ms or ISO-8601),
    max_retries, priority, queue, timeout (seconds), cwd, env (an object of
    strings), retry (policy, backoff_base, max_delay, jitter). Examples:
      queuectl enqueue '{"id":"job1","command":"echo hi"}'
      queuectl enqueue --command 'make backup' --delay 10m --max-retries 5
      queuectl enqueue -c './render.sh' --queue render --timeout 2h --env SCALE=2
      queuectl enqueue --file jobs.jsonl      # one JSON object per line

    A job runs in the directory enqueue is called from unless it gives its
    own cwd (a relative one is taken from there). --queue, --timeout, --cwd
    and --env also apply to JSON and --file jobs that do not set the field
    themselves.

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
    defaults = _flag_defaults(queue_name, timeout, cwd, env_items)

    # (where, spec): where prefixes an error about the spec ("line 3: ").
    specs: list[tuple[str, JobSpec]] = []
    if job_json is not None:
        specs = [("", parse_job_spec(_with_defaults(_decode(job_json, "job"), defaults)))]
    elif file_ is not None:
        for lineno, line in _read_lines(file_):
            try:
                spec = parse_job_spec(_with_defaults(_decode(line, f"line {lineno}"), defaults))
                if spec.run_at is not None:
                    parse_timestamp_ms(spec.run_at)  # report a bad run_at with its line
                specs.append((f"line {lineno}: ", spec))
            except UsageError as exc:
                msg = str(exc)
                raise UsageError(msg if msg.startswith("line ") else f"line {lineno}: {msg}"
                                 ) from None
        if not specs:
            raise UsageError(f"{shown(file_)}: no jobs found")
    else:
        data: dict[str, Any] = {"command": command, **defaults}
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
        specs = [("", parse_job_spec(data))]

    app = state.app()
    if any(spec.retry and "policy" in spec.retry for _, spec in specs):
        _check_policies(app, specs)
    storage = app.storage
    settings = app.settings()
    now = now_ms()
    try:
        base_dir: str | None = os.getcwd()
    except OSError:  # the current directory was removed: the worker's own
        base_dir = None
    jobs: list[NewJob] = [s.to_new_job(default_max_retries=settings.max_retries, now=now,
                                       base_dir=base_dir) for _, s in specs]
    storage.enqueue(jobs)
    from ..wakeup import notify

    notify(app.config.home)
    if as_json:
        emit_json({"enqueued": len(jobs), "ids": [j.id for j in jobs]})
    elif len(jobs) == 1:
        click.echo(f"Job enqueued with ID: {jobs[0].id}")
    else:
        click.echo(f"Enqueued {len(jobs)} jobs.")
    missing = sorted({j.cwd for j in jobs if j.cwd is not None and j.cwd != base_dir
                      and not os.path.isdir(j.cwd)})
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        click.echo(f"Warning: cwd {shown(missing[0])}{more} is not a directory on this "
                   "machine; a job fails unless its cwd exists where it runs", err=True)
    plugins = app.plugins
    if plugins.has_listeners():
        for new in jobs:
            stored = storage.get(new.id)
            if stored is not None:
                plugins.job_event("enqueued", stored, None)
    from ..fastpath import remember

    remember(app)


def _active_workers(state: State) -> int:
    from ..timeutil import now_ms

    app = state.app()
    lease_ms = app.settings().lease_seconds * 1000
    now = now_ms()
    return sum(1 for w in app.storage.list_workers() if w.heartbeat_at >= now - lease_ms)


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
    app = state.app()
    counts = {s.value: n for s, n in app.storage.counts(queue_name).items()}
    active = _active_workers(state)
    paused = app.storage.paused_queues()
    if as_json:
        emit_json({**{name: counts.get(name, 0) for name in STATE_NAMES},
                   "active_workers": active, "paused_queues": paused, "queue": queue_name})
        from ..fastpath import remember

        remember(app)
        return
    which = "" if queue_name is None else f" of queue '{queue_name}'"
    click.echo(f"Queue status{which} ({app.storage.describe()})")
    for name in STATE_NAMES:
        label = "dead (DLQ)" if name == "dead" else name
        click.echo(f"  {label:<12} {counts.get(name, 0):>8}")
    click.echo(f"Active workers: {active}")
    if queue_name is not None:
        click.echo(f"Paused: {'yes' if queue_name in paused else 'no'}")
    else:
        click.echo(f"Paused queues: {', '.join(paused) if paused else 'none'}")
    from ..fastpath import remember

    remember(app)


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
@click.option("--limit", type=click.IntRange(min=1), metavar="N", help="At most N jobs.")
@json_option
@pass_state
def list_cmd(state: State, state_name: str | None, queue_name: str | None,
             limit: int | None, as_json: bool) -> None:
    """List jobs in enqueue order (all states and queues unless --state or
    --queue is given).

    ATTEMPTS shows attempts made / attempts allowed (max_retries + 1).
    """
    app = state.app()
    jobs = app.storage.list_jobs(_state_option(state_name), limit, queue=queue_name)
    if as_json:
        emit_json([j.to_json() for j in jobs])
        return
    if not jobs:
        what = " ".join(w for w in (state_name, "jobs") if w)
        where = "" if queue_name is None else f" in queue '{queue_name}'"
        click.echo(f"No {what}{where}." if state_name or queue_name else "No jobs.")
        return
    table(["ID", "STATE", "QUEUE", "ATTEMPTS", "PRIO", "RUN AT", "COMMAND", "LAST ERROR"],
          _job_rows(jobs))


__all__ = ["enqueue", "list_cmd", "number", "status"]
