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
    from collections.abc import Callable, Iterable, Iterator
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


class _Jobs:
    """Makes the jobs of one ``enqueue`` from their specs, and remembers what
    it says after storing them: their count, the cwds they name that are
    not the current directory (at most :data:`MAX_CWDS_CHECKED`), their ids
    when asked (in a temporary file: a million ids stay out of memory)."""

    def __init__(self, app: App, *, keep_ids: bool) -> None:
        from .models import spec_to_job
        from .timeutil import now_ms

        self.to_job = spec_to_job
        self.app = app
        self.max_retries = app.settings().max_retries
        self.now = now_ms()
        try:
            self.base_dir: str | None = os.getcwd()
        except OSError:  # the current directory was removed: the worker's own
            self.base_dir = None
        self.count = 0
        self.first_id = ""
        self.cwds: set[str] = set()
        self.policies: set[str] = set()
        self.ids = None
        if keep_ids:
            import tempfile

            self.ids = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115 - close()

    def make(self, spec: Spec) -> Job:
        where, data = spec
        policy = (data.get("retry") or {}).get("policy")
        if policy is not None and policy not in self.policies:
            _check_policies(self.app, [spec])
            self.policies.add(policy)
        try:
            job = self.to_job(data, default_max_retries=self.max_retries, now=self.now,
                              base_dir=self.base_dir)
        except UsageError as exc:
            raise UsageError(f"{where}{exc}") from None
        self.count += 1
        if self.count == 1:
            self.first_id = job.id
        if self.ids is not None:
            self.ids.write(json.dumps(job.id) + "\n")
        if (job.cwd is not None and job.cwd != self.base_dir
                and len(self.cwds) < MAX_CWDS_CHECKED):
            self.cwds.add(job.cwd)
        return job

    def close(self) -> None:
        if self.ids is not None:
            self.ids.close()

    def stored_ids(self) -> Iterator[str]:
        if self.ids is None:
            return iter(())
        self.ids.seek(0)
        return (json.loads(line) for line in self.ids)

    def report(self, ids: Callable[[], Iterable[str]], *, as_json: bool) -> None:
        """Wake the local workers, say what was stored, warn, broadcast
        (``ids`` gives the ids stored, in order, each time it is called)."""
        from .wakeup import notify

        app = self.app
        notify(app.config.home_dir)
        if as_json:  # streamed: a million ids need not be held in memory
            out(f'{{\n  "enqueued": {self.count},\n  "ids": [')
            for i, job_id in enumerate(ids()):
                sys.stdout.write(("," if i else "") + "\n    " + json.dumps(
                    job_id, ensure_ascii=False))
            out("\n  ]\n}\n" if self.count else "]\n}\n")
        elif self.count == 1:
            out(f"Job enqueued with ID: {self.first_id}\n")
        else:
            out(f"Enqueued {self.count} jobs.\n")
        missing = sorted(cwd for cwd in self.cwds if not os.path.isdir(cwd))
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            sys.stderr.write(f"Warning: cwd {shown(missing[0])}{more} is not a directory on "
                             "this machine; a job fails unless its cwd exists where it runs\n")
        if app.has_event_listeners():
            for job_id in ids():
                stored = app.ledger.get(job_id)
                if stored is not None:
                    app.plugins.job_event("enqueued", stored, None)


#: How many distinct cwds one enqueue checks for the warning.
MAX_CWDS_CHECKED = 1000


def enqueue(app: App, specs: list[Spec], *, as_json: bool) -> None:
    """Store the jobs, all or nothing; wake the local workers; say so."""
    made = _Jobs(app, keep_ids=False)
    jobs = [made.make(spec) for spec in specs]
    app.ledger.enqueue(jobs)
    made.report(lambda: (job.id for job in jobs), as_json=as_json)


def enqueue_lines(app: App, lines: Iterable[tuple[int, str]], source: str,
                  defaults: dict[str, Any], *, as_json: bool, progress: bool = False) -> None:
    """``enqueue --file``: one job per (number, line), streamed into one
    all-or-nothing insert, so that memory does not grow with the file; with
    ``progress``, a count on stderr every :data:`PROGRESS_EVERY` jobs."""
    made = _Jobs(app, keep_ids=as_json or app.has_event_listeners())

    spec_of = line_reader(defaults)

    def jobs() -> Iterator[Job]:
        for lineno, line in lines:
            yield made.make(spec_of(lineno, line))
            if progress and made.count % PROGRESS_EVERY == 0:
                sys.stderr.write(f"\r{made.count:,} jobs read...")
                sys.stderr.flush()
        if made.count == 0:
            raise UsageError(f"{shown(source)}: no jobs found")

    try:
        try:
            app.ledger.enqueue_stream(jobs())
        finally:
            if progress and made.count >= PROGRESS_EVERY:
                sys.stderr.write("\r\x1b[K")  # the count's line, cleared
        made.report(made.stored_ids, as_json=as_json)
    finally:
        made.close()


#: ``enqueue --file`` on a terminal counts the jobs read this often.
PROGRESS_EVERY = 100_000


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
