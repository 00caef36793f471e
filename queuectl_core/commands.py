"""``enqueue`` and ``status``, without click: the one implementation of
each, called by the click commands (``cli/jobs.py``) and by the CLI's
cached start-up (``cli/startup.py``), which skips loading click and pluggy
for the calls scripts make in loops. Each command reads its input, runs
against an :class:`~queuectl_core.app.App`, and returns the text to print.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys

from .errors import JobNotFoundError, UsageError, shown
from .models import JobState

# typing is not imported at run time (the CLI's hot path).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator
    from typing import IO, Any

    from .app import App
    from .models import Job

    #: A job spec and where it came from ("line 3: " prefixes its errors).
    Spec = tuple[str, dict[str, Any]]

#: Every state, in display order.
STATE_NAMES = tuple(state.value for state in JobState)


def json_text(data: Any) -> str:
    """What ``--json`` prints."""
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def out(text: str) -> None:
    """Write a command's output to stdout."""
    sys.stdout.write(text)
    sys.stdout.flush()


def decode(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{where}: invalid JSON: {exc.msg} (line {exc.lineno} column "
                         f"{exc.colno})") from None
    except RecursionError:
        raise UsageError(f"{where}: JSON is nested too deeply") from None
    except ValueError as exc:  # e.g. an integer literal of over 4300 digits
        raise UsageError(f"{where}: invalid JSON: {exc}") from None


def stored_id(job_id: str) -> str:
    """An id typed on the command line, as it could be stored. Bytes that
    are not UTF-8 (decoded by Python as lone surrogates) can be in no stored
    id, so such an id is simply not found."""
    try:
        job_id.encode("utf-8")
    except UnicodeEncodeError:
        raise JobNotFoundError(job_id) from None
    return job_id


# ------------------------------------------------------------------ enqueue

def with_defaults(data: Any, defaults: dict[str, Any]) -> Any:
    """A decoded job object with the flag fields (--queue, --timeout, --cwd,
    --env) filled in where the job does not give its own (its own ``env``
    entries win over --env ones)."""
    if not defaults or not isinstance(data, dict):
        return data
    merged = {**{k: v for k, v in defaults.items() if k != "env"}, **data}
    if "env" in defaults:
        own = data.get("env")
        merged["env"] = {**defaults["env"], **own} if isinstance(own, dict) else (
            defaults["env"] if own is None else own)
    return merged


def spec_from_json(text: str, defaults: dict[str, Any] | None = None) -> list[Spec]:
    """The job of ``enqueue JSON``."""
    from .jobspec import parse_job_spec

    try:
        data = decode(text, "job")
    except UsageError:
        if text.strip()[:1] in ("", "{", "["):
            raise  # an attempt at JSON: the precise error
        raise UsageError(f"job: not JSON; did you mean: {plain_command_hint(text)}?"
                         ) from None
    return [("", parse_job_spec(with_defaults(data, defaults or {})))]


def spec_from_command(command: str, defaults: dict[str, Any] | None = None, *,
                      job_id: str | None = None, run_at: str | None = None,
                      delay: int | None = None, max_retries: int | None = None,
                      priority: int | None = None) -> list[Spec]:
    """The job of ``enqueue -c CMD`` and its options (``delay`` in ms)."""
    from .jobspec import parse_job_spec
    from .timeutil import now_ms, parse_run_at_ms

    data: dict[str, Any] = {"command": command, **(defaults or {})}
    if job_id is not None:
        data["id"] = job_id
    if run_at is not None:
        digits = run_at.strip()
        data["run_at"] = (int(digits) if digits.isascii() and digits.isdigit()
                          and len(digits) <= 20 else run_at)
        parse_run_at_ms(data["run_at"], "--run-at")  # its errors name the option
    if delay is not None:
        data["run_at"] = now_ms() + delay
    if max_retries is not None:
        data["max_retries"] = max_retries
    if priority is not None:
        data["priority"] = priority
    return [("", parse_job_spec(data))]


def plain_command_hint(text: str) -> str:
    """``queuectl enqueue -c TEXT``, quoted for a shell; a command that
    cannot be shown on one line (control characters) as ``CMD``."""
    import shlex

    return f"queuectl enqueue -c {shlex.quote(text) if text.isprintable() else 'CMD'}"


def line_reader(defaults: dict[str, Any]) -> Callable[[int, str], Spec]:
    """What reads the job of one line of ``enqueue --file`` (its errors name
    the line), imports done once: it runs a million times."""
    from .jobspec import parse_job_spec
    from .timeutil import parse_run_at_ms

    def spec_of(lineno: int, line: str) -> Spec:
        try:
            spec = parse_job_spec(with_defaults(decode(line, f"line {lineno}"), defaults))
            if spec.get("run_at") is not None:
                parse_run_at_ms(spec["run_at"])  # report a bad run_at with its line
            return (f"line {lineno}: ", spec)
        except UsageError as exc:
            msg = str(exc)
            raise UsageError(msg if msg.startswith("line ") else f"line {lineno}: {msg}"
                             ) from None

    return spec_of


def _check_policies(app: App, specs: list[Spec]) -> None:
    """A job's ``retry.policy`` must name an installed backoff policy."""
    from .registry import normalize_name

    plugins = app.plugins
    names = plugins.backoff_policies()
    for where, spec in specs:
        policy = (spec.get("retry") or {}).get("policy")
        if policy is None:
            continue
        try:
            key = normalize_name(policy)
        except ValueError:
            key = policy
        if key not in names:
            why = plugins.missing(names, policy, "backoff policy", "queuectl_backoff_policies",
                                  hint=False)
            raise UsageError(f"{where}invalid job: retry.policy: {why}")


def enqueue(app: App, specs: list[Spec], *, as_json: bool) -> None:
    """Store the jobs, all or nothing; wake the local workers; say so."""
    from .models import spec_to_job
    from .timeutil import now_ms
    from .wakeup import notify

    if any("policy" in (spec.get("retry") or {}) for _, spec in specs):
        _check_policies(app, specs)
    ledger = app.ledger
    settings = app.settings()
    now = now_ms()
    try:
        base_dir: str | None = os.getcwd()
    except OSError:  # the current directory was removed: the worker's own
        base_dir = None
    jobs: list[Job] = []
    for where, spec in specs:
        try:
            jobs.append(spec_to_job(spec, default_max_retries=settings.max_retries, now=now,
                                    base_dir=base_dir))
        except UsageError as exc:
            raise UsageError(f"{where}{exc}") from None
    ledger.enqueue(jobs)
    notify(app.config.home_dir)
    if as_json:
        out(json_text({"enqueued": len(jobs), "ids": [j.id for j in jobs]}))
    elif len(jobs) == 1:
        out(f"Job enqueued with ID: {jobs[0].id}\n")
    else:
        out(f"Enqueued {len(jobs)} jobs.\n")
    _warn_missing_cwds(j.cwd for j in jobs if j.cwd is not None and j.cwd != base_dir)
    if app.has_event_listeners():
        for new in jobs:
            stored = ledger.get(new.id)
            if stored is not None:
                app.plugins.job_event("enqueued", stored, None)


def enqueue_lines(app: App, lines: Iterable[tuple[int, str]], source: str,
                  defaults: dict[str, Any], *, as_json: bool, progress: bool = False) -> None:
    """``enqueue --file``: one job per (number, line), streamed into one
    all-or-nothing insert (``Ledger.enqueue_stream``), so that memory does
    not grow with the file: the same jobs, output and warnings as
    :func:`enqueue`, with the ids kept in a temporary file when they are
    printed or broadcast. With ``progress``, a count on stderr every
    :data:`PROGRESS_EVERY` jobs."""
    import tempfile

    from .models import spec_to_job
    from .timeutil import now_ms
    from .wakeup import notify

    spec_of = line_reader(defaults)
    max_retries = app.settings().max_retries
    now = now_ms()
    try:
        base_dir: str | None = os.getcwd()
    except OSError:  # the current directory was removed: the worker's own
        base_dir = None
    listeners = app.has_event_listeners()
    count, first = 0, ""
    cwds: set[str] = set()
    policies: set[str] = set()

    def jobs(ids: IO[str] | None) -> Iterator[Job]:
        nonlocal count, first
        for lineno, line in lines:
            where, spec = spec_of(lineno, line)
            policy = (spec.get("retry") or {}).get("policy")
            if policy is not None and policy not in policies:
                _check_policies(app, [(where, spec)])
                policies.add(policy)
            try:
                job = spec_to_job(spec, default_max_retries=max_retries, now=now,
                                  base_dir=base_dir)
            except UsageError as exc:
                raise UsageError(f"{where}{exc}") from None
            count += 1
            first = first or job.id
            if ids is not None:
                ids.write(json.dumps(job.id) + "\n")
            if job.cwd is not None and job.cwd != base_dir and len(cwds) < MAX_CWDS_CHECKED:
                cwds.add(job.cwd)
            if progress and count % PROGRESS_EVERY == 0:
                sys.stderr.write(f"\r{count:,} jobs read...")
                sys.stderr.flush()
            yield job
        if count == 0:
            raise UsageError(f"{shown(source)}: no jobs found")

    with contextlib.ExitStack() as stack:
        ids = (stack.enter_context(tempfile.TemporaryFile("w+", encoding="utf-8"))
               if as_json or listeners else None)
        try:
            app.ledger.enqueue_stream(jobs(ids))
        finally:
            if progress and count >= PROGRESS_EVERY:
                sys.stderr.write("\r\x1b[K")  # the count's line, cleared
        notify(app.config.home_dir)
        _say_streamed(count, first, ids, as_json=as_json)
        _warn_missing_cwds(cwds)
        if listeners:
            for job_id in _ids_in(ids):
                stored = app.ledger.get(job_id)
                if stored is not None:
                    app.plugins.job_event("enqueued", stored, None)


def _say_streamed(count: int, first: str, ids: IO[str] | None, *,
                  as_json: bool) -> None:
    """What :func:`enqueue` prints, from the ids in a file."""
    if as_json:  # as json_text would print it, one id at a time
        out(f'{{\n  "enqueued": {count},\n  "ids": [')
        for i, job_id in enumerate(_ids_in(ids)):
            sys.stdout.write(("," if i else "") + "\n    "
                             + json.dumps(job_id, ensure_ascii=False))
        out("\n  ]\n}\n")
    elif count == 1:
        out(f"Job enqueued with ID: {first}\n")
    else:
        out(f"Enqueued {count} jobs.\n")


def _ids_in(ids: IO[str] | None) -> Iterator[str]:
    if ids is None:
        return iter(())
    ids.seek(0)
    return (json.loads(line) for line in ids)


def _warn_missing_cwds(cwds: Iterable[str]) -> None:
    missing = sorted(cwd for cwd in cwds if not os.path.isdir(cwd))
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        sys.stderr.write(f"Warning: cwd {shown(missing[0])}{more} is not a directory on this "
                         "machine; a job fails unless its cwd exists where it runs\n")


#: ``enqueue --file`` on a terminal counts the jobs read this often.
PROGRESS_EVERY = 100_000
#: How many distinct cwds ``enqueue --file`` checks for its warning.
MAX_CWDS_CHECKED = 1000


# ------------------------------------------------------------------ status

def active_workers(app: App) -> int:
    """Workers whose heartbeat is fresher than the lease length."""
    from .timeutil import now_ms

    lease_ms = app.settings().lease_seconds * 1000
    now = now_ms()
    return sum(1 for w in app.ledger.list_workers() if w.heartbeat_at >= now - lease_ms)


def status(app: App, queue: str | None, *, as_json: bool) -> None:
    """Jobs per state (of ``queue`` if given), live workers, paused queues."""
    ledger = app.ledger
    counts = {s.value: n for s, n in ledger.counts(queue).items()}
    active = active_workers(app)
    paused = ledger.paused_queues()
    if as_json:
        out(json_text({**{name: counts.get(name, 0) for name in STATE_NAMES},
                       "active_workers": active, "paused_queues": paused, "queue": queue}))
        return
    which = "" if queue is None else f" of queue '{queue}'"
    lines = [f"Queue status{which} ({ledger.describe()})"]
    for name in STATE_NAMES:
        label = "dead (DLQ)" if name == "dead" else name
        lines.append(f"  {label:<12} {counts.get(name, 0):>8}")
    lines.append(f"Active workers: {active}")
    if queue is not None:
        lines.append(f"Paused: {'yes' if queue in paused else 'no'}")
    else:
        lines.append(f"Paused queues: {', '.join(paused) if paused else 'none'}")
    out("\n".join(lines) + "\n")
