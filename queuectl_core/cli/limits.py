"""``queuectl limit``: how many jobs with one concurrency key run at once."""

from __future__ import annotations

import click

from ..errors import QueuectlError, UsageError
from ..jobspec import key_problem
from ..storage import DEFAULT_CONCURRENCY_LIMIT, LIMITS_SETTING
from .jobs import json_option
from .main import State, pass_state
from .output import emit_json, printable, table

#: The largest limit (more workers than this on one key is not a limit).
MAX_LIMIT = 10_000


def _limits(state: State) -> dict[str, int]:
    stored = state.app().ledger.get_settings().get(LIMITS_SETTING)
    if not isinstance(stored, dict):
        return {}
    return {str(k): v for k, v in stored.items() if type(v) is int}


def _check_key(key: str) -> None:
    problem = key_problem(key)
    if problem is not None:
        raise UsageError(f"KEY: {problem}")


@click.group()
def limit() -> None:
    """Concurrency limits: at most N jobs with a concurrency key run at once,
    across every worker and machine sharing the queue. A key with no limit
    set allows 1 (a mutex).

    \b
    queuectl limit set gpu 2        # two gpu jobs at a time
    queuectl enqueue -c './train.sh' --concurrency-key gpu
    queuectl limit list
    queuectl limit remove gpu       # back to 1
    """


@limit.command("set")
@click.argument("key", metavar="KEY")
@click.argument("n", metavar="N", type=click.IntRange(1, MAX_LIMIT))
@json_option
@pass_state
def set_limit(state: State, key: str, n: int, as_json: bool) -> None:
    """Let at most N jobs with KEY run at once (1 to 10000)."""
    _check_key(key)
    limits = _limits(state)
    limits[key] = n
    state.app().ledger.set_setting(LIMITS_SETTING, limits)
    if as_json:
        emit_json({"key": key, "limit": n})
    else:
        click.echo(f"Limit of '{printable(key)}': {n} at once.")


@limit.command("remove")
@click.argument("key", metavar="KEY")
@json_option
@pass_state
def remove_limit(state: State, key: str, as_json: bool) -> None:
    """Forget KEY's limit: its jobs run one at a time again."""
    limits = _limits(state)
    if key not in limits:
        raise QueuectlError(f"no limit is set for {key!r}")
    del limits[key]
    state.app().ledger.set_setting(LIMITS_SETTING, limits)
    if as_json:
        emit_json({"key": key, "limit": DEFAULT_CONCURRENCY_LIMIT, "removed": True})
    else:
        click.echo(f"Limit of '{printable(key)}' removed: {DEFAULT_CONCURRENCY_LIMIT} at once.")


@limit.command("list")
@json_option
@pass_state
def list_limits(state: State, as_json: bool) -> None:
    """Each key with a limit, and how many of its jobs run now."""
    from ..models import JobState

    limits = _limits(state)
    running: dict[str, int] = {}
    for job in state.app().ledger.list_jobs(JobState.PROCESSING):
        if job.concurrency_key is not None:
            running[job.concurrency_key] = running.get(job.concurrency_key, 0) + 1
    keys = sorted(set(limits) | set(running))
    if as_json:
        emit_json([{"key": k, "limit": limits.get(k, DEFAULT_CONCURRENCY_LIMIT),
                    "set": k in limits, "running": running.get(k, 0)} for k in keys])
        return
    if not keys:
        click.echo("No limits set (a concurrency key without one runs 1 job at a time).")
        return
    table(["KEY", "LIMIT", "RUNNING"],
          [[printable(k), f"{limits[k]}" if k in limits else
            f"{DEFAULT_CONCURRENCY_LIMIT} (default)", str(running.get(k, 0))] for k in keys])
