"""Job specs: what users enqueue, validated by hand with one-line errors.

The validation is plain code (no pydantic, no dataclass machinery), because
``queuectl enqueue`` is a hot path: scripts call it in loops. The JSON Schema
that ``queuectl schema job`` prints is built with pydantic from
:data:`SPEC_FIELDS` and the same limits (``schema.py``), and a test keeps the
two in agreement.
"""

from __future__ import annotations

import math
import os

from .errors import UsageError, shown
from .limits import (
    MAX_COMMAND_LENGTH,
    MAX_ENV_BYTES,
    MAX_ENV_ENTRIES,
    MAX_ID_LENGTH,
    MAX_PATH_LENGTH,
    MAX_PRIORITY,
    MAX_QUEUE_NAME_LENGTH,
    MAX_RETRIES_LIMIT,
    MAX_TIMEOUT_SECONDS,
    RETRY_KEYS,
)
from .settings import SETTING_SPECS
from .timeutil import duration_value

#: The keys of a job's ``retry`` object that are durations (in seconds, or
#: strings such as "90s", as ``timeout`` is).
DURATION_KEYS = ("max_delay",)

# typing is not imported at run time (it costs more than this whole module).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


#: The fields of a job spec, each with what it means (``queuectl schema job``
#: and ``enqueue --help`` show these).
SPEC_FIELDS: dict[str, str] = {
    "id": "unique id (1 to 255 printable characters; default: 12 random hex digits)",
    "command": "the shell command to run (required)",
    "run_at": "when to run: epoch milliseconds (2001 or later: a smaller number is taken "
              "for seconds and refused) or an ISO-8601 time (default: now)",
    "max_retries": "retries after the first attempt before the job is dead "
                   "(default: the max_retries setting)",
    "priority": "higher runs first (default 0)",
    "queue": "the named queue to put the job in (default: default)",
    "timeout": "seconds an attempt may run before it is killed, or a duration such as "
               "\"90s\" or \"1h30m\"",
    "cwd": "the directory to run in (default: the directory enqueue runs in)",
    "env": "environment variables to set for the command (an object of strings)",
    "retry": "per-job retry settings: policy, backoff_base, max_delay, jitter",
    "after": "ids of jobs this one runs after (stored already, or in the same batch)",
    "after_mode": "success (default: run once every job in after completed; skipped if "
                  "one is dead, cancelled or skipped) or finished (run once they all "
                  "ended, whatever the outcome)",
    "concurrency_key": "at most N jobs with this key run at once (queuectl limit set KEY N; "
                       "1 if no limit is set)",
    "unique_key": "refuse this job while another job with this key is pending, waiting, "
                  "processing or failed",
}
#: The most jobs one job may run after.
MAX_AFTER = 100_000
AFTER_MODES = ("success", "finished")
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def _is_int(value: object) -> bool:
    return type(value) is int  # bool is not an int here, nor is 3.0


def new_job_id() -> str:
    """12 random hex digits (48 bits)."""
    return os.urandom(6).hex()


def _is_number(value: object) -> bool:
    return (type(value) is int or type(value) is float) and math.isfinite(value)


def _text_problem(value: str) -> str | None:
    if "\x00" in value:
        return "must not contain NUL characters"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        code = ord(value[exc.start])
        if 0xDC80 <= code <= 0xDCFF:  # a byte that is not UTF-8, as Python decodes argv
            return f"not valid UTF-8 (byte 0x{code - 0xDC00:02x} at character {exc.start + 1})"
        return (f"not valid Unicode text (a lone surrogate \\u{code:04x} at character "
                f"{exc.start + 1})")
    return None


def queue_name_problem(name: object) -> str | None:
    """Why ``name`` is not a valid queue name, or None."""
    if type(name) is not str:
        return "must be a string"
    if not 1 <= len(name) <= MAX_QUEUE_NAME_LENGTH or not set(name) <= _NAME_CHARS \
            or name[0] in ".-":
        return (f"must be 1 to {MAX_QUEUE_NAME_LENGTH} letters, digits, '.', '_' or '-', "
                "not starting with '.' or '-'")
    return None


def env_problem(env: object) -> str | None:
    if not isinstance(env, dict):
        return "env: must be an object of strings, e.g. {\"LANG\": \"C\"}"
    if len(env) > MAX_ENV_ENTRIES:
        return f"env: at most {MAX_ENV_ENTRIES} variables"
    size = 0
    for key, value in env.items():
        if type(key) is not str or not key or "=" in key:
            return f"env: {shown(str(key))}: a variable name must be non-empty, without '='"
        if type(value) is not str:
            return f"env.{shown(key)}: must be a string"
        problem = _text_problem(key) or _text_problem(value)
        if problem is not None:
            return f"env.{shown(key)}: {problem}"
        size += len(key.encode()) + len(value.encode()) + 2
    if size > MAX_ENV_BYTES:
        return f"env: at most {MAX_ENV_BYTES} bytes in all"
    return None


def retry_problem(retry: object) -> str | None:
    """Why a job's ``retry`` object is invalid, or None (names of policies
    are checked against the installed ones elsewhere)."""
    if not isinstance(retry, dict):
        return "retry: must be an object, e.g. {\"policy\": \"linear\", \"max_delay\": 60}"
    for key, value in retry.items():
        if key not in RETRY_KEYS:
            return f"retry.{shown(str(key))}: unknown field; choose from {', '.join(RETRY_KEYS)}"
        if key == "policy":
            problem = queue_name_problem(value)
            if problem is not None:
                return f"retry.policy: {problem}"
            continue
        spec = SETTING_SPECS[key]
        if key in DURATION_KEYS:
            value, problem = _seconds(value)
            if problem is not None:
                return f"retry.{key}: {problem}"
        elif not _is_number(value):
            return f"retry.{key}: must be a finite number"
        if not spec.low <= value <= spec.high:
            return f"retry.{key}: must be from {spec.low:g} to {spec.high:g}"
    return None


def _seconds(value: object) -> tuple[Any, str | None]:
    """A duration field: (its seconds, None), or (None, why it is not one):
    a number of seconds or a duration string ("90s", "1h30m")."""
    try:
        return duration_value(value, "s"), None
    except UsageError as exc:
        return None, str(exc)


def retry_in_seconds(retry: dict[str, Any]) -> dict[str, Any]:
    """A valid ``retry`` object with a duration string ("90s") turned into
    seconds (a copy if there was one)."""
    strings = [k for k in DURATION_KEYS if type(retry.get(k)) is str]
    return {**retry, **{k: duration_value(retry[k], "s") for k in strings}} if strings else retry


def in_seconds(spec: dict[str, Any]) -> dict[str, Any]:
    """A valid job spec with its durations given as strings ("90s")
    turned into seconds (a copy if any was)."""
    retry = spec.get("retry")
    if isinstance(retry, dict) and (normal := retry_in_seconds(retry)) is not retry:
        spec = {**spec, "retry": normal}
    if type(spec.get("timeout")) is str:
        spec = {**spec, "timeout": duration_value(spec["timeout"], "s")}
    return spec


def _command_problem(command: object) -> str | None:
    if type(command) is not str:
        return "must be a string"
    if not command.strip():
        return "must not be blank"
    if len(command) > MAX_COMMAND_LENGTH:
        return f"must be at most {MAX_COMMAND_LENGTH} characters"
    return _text_problem(command)


def _id_problem(job_id: object) -> str | None:
    if type(job_id) is not str:
        return "must be a string"
    if not 1 <= len(job_id) <= MAX_ID_LENGTH:
        return f"must be 1 to {MAX_ID_LENGTH} characters"
    problem = _text_problem(job_id)
    if problem is not None:
        return problem
    if job_id != job_id.strip() or not job_id.isprintable():
        return "must be printable text without leading/trailing spaces or control characters"
    return None


def key_problem(key: object) -> str | None:
    """Why ``key`` is not a valid concurrency or unique key (as an id), or None."""
    return _id_problem(key)


def _run_at_problem(run_at: object) -> str | None:
    if _is_int(run_at) or type(run_at) is str:
        return None  # the time itself is parsed when the job is made (spec_to_job)
    return "must be epoch milliseconds (an integer) or an ISO-8601 string"


def _max_retries_problem(value: object) -> str | None:
    if not _is_int(value):
        return "must be a whole number (a JSON integer)"
    assert isinstance(value, int)
    return None if 0 <= value <= MAX_RETRIES_LIMIT else f"must be from 0 to {MAX_RETRIES_LIMIT}"


def _priority_problem(value: object) -> str | None:
    if not _is_int(value):
        return "must be a whole number (a JSON integer)"
    assert isinstance(value, int)
    if not -MAX_PRIORITY <= value <= MAX_PRIORITY:
        return f"must be from {-MAX_PRIORITY} to {MAX_PRIORITY}"
    return None


def _timeout_problem(value: object) -> str | None:
    seconds, problem = _seconds(value)
    if problem is not None:
        return problem
    if not 0 < seconds <= MAX_TIMEOUT_SECONDS:
        return "must be more than 0 seconds and at most 30 days (2592000)"
    return None


def _cwd_problem(cwd: object) -> str | None:
    if type(cwd) is not str or not cwd:
        return "must be a non-empty string (a directory)"
    if len(cwd) > MAX_PATH_LENGTH:
        return f"must be at most {MAX_PATH_LENGTH} characters"
    return _text_problem(cwd)


def _after_problem(value: object) -> str | None:
    if not isinstance(value, list):
        return "must be a list of job ids, e.g. [\"fetch\", \"build\"]"
    if len(value) > MAX_AFTER:
        return f"at most {MAX_AFTER} job ids"
    for item in value:
        problem = _id_problem(item)
        if problem is not None:
            return f"{shown(str(item))}: {problem}"
    if len(set(value)) < len(value):
        return "names a job twice"
    return None


def _after_mode_problem(value: object) -> str | None:
    return None if value in AFTER_MODES else "must be success or finished"


#: Each field's check, in the order they are checked (a spec's first problem
#: is reported); None values are checked only when they are required.
_CHECKS: dict[str, Callable[[object], str | None]] = {
    "command": _command_problem,
    "id": _id_problem,
    "run_at": _run_at_problem,
    "max_retries": _max_retries_problem,
    "priority": _priority_problem,
    "queue": queue_name_problem,
    "timeout": _timeout_problem,
    "cwd": _cwd_problem,
    "env": env_problem,
    "retry": retry_problem,
    "after": _after_problem,
    "after_mode": _after_mode_problem,
    "concurrency_key": _id_problem,
    "unique_key": _id_problem,
}
#: Checks whose messages already name the field.
_NAMED = frozenset({"env", "retry"})


def spec_problem(data: dict[str, Any]) -> str | None:
    """The first problem with a decoded job object, as ``field: message``."""
    for key in data:
        if key not in SPEC_FIELDS:
            return f"{shown(key)}: unknown field"
    if "command" not in data:
        return "command: is required"
    if data.get("after_mode") is not None and not data.get("after"):
        return "after_mode: needs after (the jobs to run after)"
    for name, check in _CHECKS.items():
        if name not in data:
            continue
        value = data[name]
        if value is None and name not in ("command", "queue", "priority"):
            continue
        problem = check(value)
        if problem is not None:
            return problem if name in _NAMED else f"{name}: {problem}"
    return None


def parse_job_spec(data: object) -> dict[str, Any]:
    """Validate one decoded JSON value as a job spec: a dict with only the
    spec's fields (raises UsageError), its durations in seconds."""
    if not isinstance(data, dict):
        raise UsageError("a job must be a JSON object, e.g. {\"command\": \"echo hi\"}")
    problem = spec_problem(data)
    if problem is not None:
        raise UsageError(f"invalid job: {problem}")
    return in_seconds(data)
