"""``enqueue`` and ``status``, without click: the one implementation of
each, called by the click commands (``cli/jobs.py``) and by the CLI's
cached start-up (``cli/startup.py``), which skips loading click and pluggy
for the calls scripts make in loops. Each command reads its input, runs
against an :class:`~queuectl_core.app.App`, and returns the text to print.
"""

from __future__ import annotations

import json
import os
import sys

from .errors import JobNotFoundError, UsageError, shown
from .models import JobState

# typing is not imported at run time (the CLI's hot path).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

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


def plain_command_hint(text: str) -> str:
    """``queuectl enqueue -c TEXT``, quoted for a shell; a command that
    cannot be shown on one line (control characters) as ``CMD``."""
    import shlex

    return f"queuectl enqueue -c {shlex.quote(text) if text.isprintable() else 'CMD'}"


def specs_from_lines(lines: list[tuple[int, str]], source: str,
                     defaults: dict[str, Any]) -> list[Spec]:
    """The jobs of ``enqueue --file``: one per non-blank line."""
    from .jobspec import parse_job_spec
    from .timeutil import parse_run_at_ms

    specs: list[Spec] = []
    for lineno, line in lines:
        try:
            spec = parse_job_spec(with_defaults(decode(line, f"line {lineno}"), defaults))
            if spec.get("run_at") is not None:
                parse_run_at_ms(spec["run_at"])  # report a bad run_at with its line
            specs.append((f"line {lineno}: ", spec))
        except UsageError as exc:
            msg = str(exc)
            raise UsageError(msg if msg.startswith("line ") else f"line {lineno}: {msg}"
                             ) from None
    if not specs:
        raise UsageError(f"{shown(source)}: no jobs found")
    return specs


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
    from .held_signals import HeldSignals
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
    # Once stored, the jobs are reported: no signal ends the command between
    # the commit and its message (a retry would enqueue them twice).
    with HeldSignals():
        ledger.enqueue(jobs)
        notify(app.config.home_dir)
        if as_json:
            out(json_text({"enqueued": len(jobs), "ids": [j.id for j in jobs]}))
        elif len(jobs) == 1:
            out(f"Job enqueued with ID: {jobs[0].id}\n")
        else:
            out(f"Enqueued {len(jobs)} jobs.\n")
    missing = sorted({j.cwd for j in jobs if j.cwd is not None and j.cwd != base_dir
                      and not os.path.isdir(j.cwd)})
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        sys.stderr.write(f"Warning: cwd {shown(missing[0])}{more} is not a directory on this "
                         "machine; a job fails unless its cwd exists where it runs\n")
    if app.has_event_listeners():
        for new in jobs:
            stored = ledger.get(new.id)
            if stored is not None:
                app.plugins.job_event("enqueued", stored, None)


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
