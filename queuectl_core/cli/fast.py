"""The ``queuectl`` entry point, with a fast path for the calls that scripts
make in loops.

``queuectl enqueue JSON [--json]``, ``queuectl status [--json]``,
``queuectl --help`` and ``queuectl --version`` are answered here without
importing click, pluggy, the models or any plugin: only the standard
library, ``jobspec`` (the same validation as the full ``enqueue``),
``fastpath`` (what the full CLI cached about plugins and configuration) and
the backend's light ``fast_path`` opener. Everything else, and every case
this module is not sure to handle exactly as the full command would, goes to
``cli/main.py``; this includes every error, so error messages and exit codes
have one source. Nothing is stored before the fast path is committed to a
call, so falling back never runs a command's effect twice.

``QUEUECTL_FAST_PATH=0`` turns the fast path off; ``QUEUECTL_FAST_PATH=debug``
prints why a call fell back (on stderr).
"""

from __future__ import annotations

import os
import sys

from .. import __version__

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ..registry import FastStore

#: Defaults of the two runtime settings used here; a unit test checks them
#: against models.SETTING_SPECS (importing that module is what we avoid).
DEFAULT_MAX_RETRIES = 3
MAX_RETRIES_RANGE = (0, 10_000)
DEFAULT_LEASE_SECONDS = 15
LEASE_SECONDS_RANGE = (3, 86_400)

STATE_NAMES = ("pending", "processing", "completed", "failed", "dead", "cancelled")

#: ``queuectl --help`` as click prints it at a width of 80 columns or more
#: (tests/unit/test_fast_path.py compares the two).
HELP = """\
Usage: queuectl [OPTIONS] COMMAND [ARGS]...

  queuectl: a background job queue for shell commands.

  Enqueue commands as jobs, start workers, and each job runs once, with
  retries (exponential backoff) and a dead letter queue for jobs that keep
  failing. Global options go before the command:

      queuectl --backend sqlite status

Options:
  --backend NAME  Storage backend (default: from config, else sqlite). Env:
                  QUEUECTL_BACKEND.
  --config PATH   YAML config file (default: $QUEUECTL_HOME/queuectl.yaml).
                  Env: QUEUECTL_CONFIG.
  --home DIR      Directory for all state (default: ~/.local/share/queuectl).
                  Env: QUEUECTL_HOME.
  --version       Show the version and exit.
  -h, --help      Show this message and exit.

Commands:
  enqueue  Add a job (JSON, flags, or a file of JSON lines).
  status   Count jobs per state, active workers and paused queues.
  list     List jobs, optionally only those in one state or queue.
  show     Show one job with every attempt.
  logs     Print (or --follow) the output of a job's attempt.
  cancel   Cancel jobs; a running job's command is stopped.
  wait     Block until jobs finish; exit 0 if all completed.
  pause    Stop workers from claiming jobs of a queue.
  resume   Let workers claim jobs of a paused queue again.
  dlq      Inspect, retry and purge jobs in the dead letter queue.
  purge    Delete finished jobs (and their output), e.g. older than 7d.
  worker   Start, run and stop worker processes.
  config   Get and set runtime settings (shared by all workers).
  plugins  List installed plugins and what they provide.
  export   Write all jobs with their history as JSON lines.
  import   Load jobs from 'export' output, all or nothing.

Aliases (the original spellings):
  worker-start  queuectl worker start
  worker-stop   queuectl worker stop
  dlq-list      queuectl dlq list
  dlq-retry     queuectl dlq retry
  config-get    queuectl config get
  config-set    queuectl config set
"""


class Decline(Exception):
    """This call is for the full CLI; the message says why (for debugging)."""


def main() -> None:
    """Console-script entry point."""
    mode = os.environ.get("QUEUECTL_FAST_PATH", "1")
    if mode != "0":
        try:
            code = run(sys.argv[1:])
        except KeyboardInterrupt:
            sys.exit(130)
        except Exception as why:  # Decline, or anything unforeseen: nothing was stored
            if mode == "debug":
                print(f"queuectl: fast path declined: {why!r}", file=sys.stderr)
        else:
            sys.exit(code)
    from .main import main as full_main

    full_main()


def run(argv: list[str]) -> int:
    """Handle ``argv`` and return the exit code, or raise Decline (having
    changed nothing)."""
    if argv in (["--help"], ["-h"]):
        return _help()
    if argv == ["--version"]:
        return _emit(f"queuectl, version {__version__}\n")
    if not argv or argv[0] not in ("status", "enqueue"):
        raise Decline("not a fast command")
    as_json = "--json" in argv[1:]
    rest = [a for a in argv[1:] if a != "--json"]
    if len(argv) - 1 - len(rest) > 1:
        raise Decline("--json given twice")
    if argv[0] == "status":
        if rest:
            raise Decline("status with options")
        return _status(as_json)
    if len(rest) != 1 or rest[0].startswith("-"):
        raise Decline("enqueue without exactly one JSON argument")
    return _enqueue(rest[0], as_json)


# ------------------------------------------------------------------ output

def _emit(text: str) -> int:
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        # Output piped into `head` and the like: not an error (as the full CLI).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return 0


def _json_text(data: Any) -> str:
    import json

    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def _help() -> int:
    # click wraps help at min(terminal width, 80) - 2 columns (COLUMNS wins).
    columns = os.environ.get("COLUMNS", "")
    if columns:
        width = int(columns) if columns.isdigit() else 0
    else:
        try:
            width = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, OSError, ValueError):
            width = 80
    if width < 80:
        raise Decline("terminal narrower than 80 columns")
    return _emit(HELP)


# ------------------------------------------------------------------ context

def _clean_absolute(path: str) -> bool:
    """A path the full CLI would show unchanged (pathlib keeps ``..`` but
    drops ``.`` and doubled or trailing slashes)."""
    return os.path.isabs(path) and os.path.normpath(path) == path and not path.startswith("//")


def _home() -> str:
    raw = os.environ.get("QUEUECTL_HOME")
    if raw:
        home = os.path.expanduser(raw)
    else:
        xdg = os.environ.get("XDG_DATA_HOME")
        base = xdg if xdg else os.path.join(os.path.expanduser("~"), ".local", "share")
        home = os.path.join(base, "queuectl")
    if not _clean_absolute(home):
        raise Decline("QUEUECTL_HOME is not a plain absolute path")
    if not os.path.isdir(home):
        raise Decline("no queue home yet")
    return home


def _config_path(home: str) -> str | None:
    explicit = os.environ.get("QUEUECTL_CONFIG")
    if explicit:
        path = os.path.expanduser(explicit)
        if not _clean_absolute(path) or not os.path.isfile(path):
            raise Decline("QUEUECTL_CONFIG is not a plain absolute path to a file")
        return path
    candidate = os.path.join(home, "queuectl.yaml")
    return candidate if os.path.isfile(candidate) else None


def _context() -> tuple[str, dict[str, Any]]:
    """QUEUECTL_HOME and the fast-path cache, if it matches the current
    environment and configuration file."""
    from .. import fastpath

    home = _home()
    cache = fastpath.load(home)
    if cache is None:
        raise Decline("no valid fast-path cache")
    config_path = _config_path(home)
    if config_path != cache.get("config_path"):
        raise Decline("another config file")
    if config_path is not None:
        try:
            with open(config_path, encoding="utf-8") as fh:
                text = fh.read()
        except (OSError, UnicodeDecodeError):
            raise Decline("config file unreadable") from None
        if text != cache.get("config_text"):
            raise Decline("config file changed")
    chosen = os.environ.get("QUEUECTL_BACKEND") or cache.get("file_backend") or "sqlite"
    if chosen != cache.get("backend"):
        raise Decline("another backend")
    if not isinstance(cache.get("fast_path"), str):
        raise Decline("backend has no fast path")
    return home, cache


def _open_store(home: str, cache: dict[str, Any]) -> FastStore:
    import importlib

    module, _, attr = cache["fast_path"].partition(":")
    opener = getattr(importlib.import_module(module), attr)
    store: FastStore | None = opener(cache.get("options"), home)
    if store is None:
        raise Decline("backend's fast path cannot open the store as it is")
    return store


def _setting(name: str, stored: dict[str, Any], cache: dict[str, Any], default: int,
             low: int, high: int) -> int:
    """An integer runtime setting: stored > YAML defaults > built-in; a value
    the full CLI would reject sends the call there."""
    value = stored.get(name, (cache.get("defaults") or {}).get(name, default))
    if type(value) is not int or not low <= value <= high:
        raise Decline(f"unusual {name} setting")
    return value


def _now_ms() -> int:
    import time

    return time.time_ns() // 1_000_000


# ------------------------------------------------------------------ status

def _status(as_json: bool) -> int:
    home, cache = _context()
    store = _open_store(home, cache)
    try:
        lease = _setting("lease_seconds", store.stored_settings(), cache,
                         DEFAULT_LEASE_SECONDS, *LEASE_SECONDS_RANGE)
        counts = store.counts(None)
        since = _now_ms() - lease * 1000
        active = sum(1 for beat in store.worker_heartbeats() if beat >= since)
        paused = store.paused_queues()
        where = store.describe()
    finally:
        store.close()
    if set(counts) - set(STATE_NAMES):
        raise Decline("unknown state in the store")
    if as_json:
        return _emit(_json_text({**{name: counts.get(name, 0) for name in STATE_NAMES},
                                 "active_workers": active, "paused_queues": paused,
                                 "queue": None}))
    lines = [f"Queue status ({where})"]
    for name in STATE_NAMES:
        label = "dead (DLQ)" if name == "dead" else name
        lines.append(f"  {label:<12} {counts.get(name, 0):>8}")
    lines.append(f"Active workers: {active}")
    lines.append(f"Paused queues: {', '.join(paused) if paused else 'none'}")
    return _emit("\n".join(lines) + "\n")


# ------------------------------------------------------------------ enqueue

def _enqueue(text: str, as_json: bool) -> int:
    import json

    from ..jobspec import DEFAULT_QUEUE, _spec_problem, new_job_id

    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        raise Decline("not valid JSON") from None
    if type(data) is not dict or _spec_problem(data) is not None:
        raise Decline("not a valid job")
    if data.get("retry") is not None:
        raise Decline("job has its own retry policy")
    home, cache = _context()
    if cache.get("job_event_listeners") is not False:
        raise Decline("a plugin listens to job events")
    try:
        base_dir = os.getcwd()
    except OSError:
        raise Decline("no current directory") from None
    cwd = data.get("cwd")
    cwd = base_dir if cwd is None else os.path.normpath(os.path.join(base_dir, cwd))
    if cwd != base_dir and not os.path.isdir(cwd):
        raise Decline("cwd is not a directory here")
    run_at = data.get("run_at")
    if run_at is not None:
        from ..errors import UsageError
        from ..timeutil import parse_timestamp_ms

        try:
            run_at = parse_timestamp_ms(run_at)
        except UsageError:
            raise Decline("bad run_at") from None
    timeout = data.get("timeout")
    store = _open_store(home, cache)
    # The job's time (created_at, and run_at if none is given) is taken once
    # the store is open: opening it may take long (PostgreSQL: importing
    # psycopg, connecting), and the job exists only from the insert on.
    now = _now_ms()
    try:
        max_retries = data.get("max_retries")
        if max_retries is None:
            max_retries = _setting("max_retries", store.stored_settings(), cache,
                                   DEFAULT_MAX_RETRIES, *MAX_RETRIES_RANGE)
        job_id = data.get("id")
        job = {
            "id": new_job_id() if job_id is None else job_id,
            "command": data["command"],
            "max_retries": max_retries,
            "priority": data.get("priority", 0),
            "run_at": now if run_at is None else run_at,
            "created_at": now,
            "queue": data.get("queue", DEFAULT_QUEUE),
            "timeout": None if timeout is None else float(timeout),
            "cwd": cwd,
            "env": data.get("env"),
            "retry": None,
        }
        if not store.enqueue(job):
            raise Decline("the id is taken")
    finally:
        store.close()
    # Stored and committed: from here on this call is ours, whatever happens.
    try:
        from ..wakeup import notify

        notify(home)
        if as_json:
            return _emit(_json_text({"enqueued": 1, "ids": [job["id"]]}))
        return _emit(f"Job enqueued with ID: {job['id']}\n")
    except Exception as exc:  # the job is stored: never fall back and store it again
        print(f"Error: internal error after the job was stored: {type(exc).__name__}: {exc}",
              file=sys.stderr)
        return 1
