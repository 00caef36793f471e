"""``queuectl schedule ...``: recurring schedules (cron or intervals).

The rules are in :mod:`queuectl_core.schedules`; these commands read and
change schedules through the store's schedule methods, and wake this
machine's idle workers after a change."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

import click

from ..errors import QueuectlError, UsageError, shown
from .jobs import json_option
from .main import State, pass_state
from .output import clip, emit_json, short_time, table
from .params import DURATION

if TYPE_CHECKING:
    from ..app import App
    from ..schedule_records import Schedule
    from ..storage import Storage


class ScheduleNotFoundError(QueuectlError):
    """No schedule of that name (exit 1)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no schedule named {shown(name)!r}")


def _store(app: App) -> Storage:
    store = app.ledger.store
    if not store.supports_schedules:
        raise store._no_schedules()
    return store


def _declared(app: App) -> set[str]:
    """Names the YAML file declares (its ``schedules:`` section)."""
    file = app.config.file
    return set(file.schedules) if file is not None else set()


def _get(store: Storage, name: str) -> Schedule:
    found = store.get_schedule(name)
    if found is None:
        raise ScheduleNotFoundError(name)
    return found


def _wake(app: App) -> None:
    from ..wakeup import notify

    notify(app.config.home)


def _max_retries(app: App) -> int:
    return app.settings().max_retries


@click.group()
def schedule() -> None:
    """Recurring jobs: cron expressions or fixed intervals, each tick fired
    exactly once by whichever worker comes first (docs/semantics.md).

    \b
      queuectl schedule add nightly --cron '0 3 * * *' --command 'backup.sh'
      queuectl schedule add ping --every 30s --command 'curl -fsS host/ping'
      queuectl schedule list
      queuectl schedule show nightly
    """


@schedule.command("add")
@click.argument("name")
@click.option("--cron", metavar="EXPR", help="A cron expression ('0 3 * * 1-5').")
@click.option("--every", metavar="DURATION", help="An interval (30s, 5m, 1h30m), anchored "
              "to when the schedule is added.")
@click.option("--command", metavar="CMD", help="The shell command each tick enqueues.")
@click.option("--queue", "queue_name", metavar="Q", help="The jobs' queue.")
@click.option("--priority", type=int, metavar="N", help="The jobs' priority.")
@click.option("--timeout", type=DURATION, metavar="D", help="The jobs' timeout (e.g. 10m).")
@click.option("--max-retries", type=int, metavar="N", help="The jobs' retries.")
@click.option("--tz", metavar="ZONE", help="Time zone of a cron expression (default UTC).")
@click.option("--overlap", type=click.Choice(["skip", "queue", "allow"]),
              help="While the previous job is still active: skip the tick (default), "
                   "queue it, or allow it to run concurrently.")
@click.option("--catchup", type=click.Choice(["none", "latest", "all"]),
              help="Ticks missed while no worker ran: none (default), the latest, or all "
                   "(at most 100).")
@click.option("--paused", is_flag=True, default=None, help="Add it paused.")
@click.option("--replace", is_flag=True, help="Replace a schedule of that name.")
@json_option
@pass_state
def add(state: State, name: str, cron: str | None, every: str | None, command: str | None,
        queue_name: str | None, priority: int | None, timeout: int | None,
        max_retries: int | None, tz: str | None, overlap: str | None, catchup: str | None,
        paused: bool | None, replace: bool, as_json: bool) -> None:
    """Add the schedule NAME (or a JSON object with the same fields:
    '{"name": "nightly", "cron": "0 3 * * *", "command": "backup.sh"}').

    A duplicate name exits 1 unless --replace is given. A schedule that the
    YAML file declares cannot be added or replaced here: the file wins.
    """
    from ..schedules import describe_cadence, parse_spec, replaced
    from ..timeutil import iso, now_ms

    flags = {"cron": cron, "every": every, "command": command, "queue": queue_name,
             "priority": priority, "timeout": None if timeout is None else timeout / 1000,
             "max_retries": max_retries, "tz": tz, "overlap": overlap, "catchup": catchup,
             "paused": paused}
    given = {k: v for k, v in flags.items() if v is not None}
    if name.lstrip().startswith("{"):
        if given:
            raise UsageError("give a schedule either as JSON or with options, not both")
        try:
            data: Any = json.loads(name)
        except json.JSONDecodeError as exc:
            raise UsageError(f"invalid JSON: {exc.msg} (at character {exc.pos})") from None
    else:
        data = {"name": name, **given}
    now = now_ms()
    new = parse_spec(data, now=now, base_dir=os.getcwd())
    app = state.app()
    store = _store(app)
    if new.name in _declared(app):
        raise QueuectlError(f"schedule {new.name!r} is declared in the YAML file "
                            f"({app.config.config_path}), which wins: running workers keep "
                            "it as the file says; change it there")
    old = store.get_schedule(new.name)
    if old is not None and not replace:
        raise QueuectlError(f"a schedule named {new.name!r} already exists (use --replace "
                            "to replace it)")
    if old is None:
        done = store.put_schedule(new, None)
    else:
        new = replaced(old, new, now)
        done = store.put_schedule(new, old.version)
    if not done:
        raise QueuectlError(f"schedule {new.name!r} was changed by another process meanwhile; "
                            "try again")
    _wake(app)
    if as_json:
        emit_json(new.to_json())
        return
    verb = "Replaced" if old is not None else "Added"
    click.echo(f"{verb} schedule '{new.name}' ({describe_cadence(new)}); "
               + ("paused." if new.paused else f"next run at {iso(new.next_run_at)}."))


@schedule.command("list")
@json_option
@pass_state
def list_schedules(state: State, as_json: bool) -> None:
    """List the schedules with their next and last runs."""
    from ..schedules import describe_cadence

    found = _store(state.app()).list_schedules()
    if as_json:
        emit_json([s.to_json() for s in found])
        return
    if not found:
        click.echo("No schedules.")
        return
    rows = []
    for s in found:
        data = s.to_json()
        rows.append([s.name, clip(describe_cadence(s), 30),
                     "paused" if s.paused else short_time(data["next_run_at"]),
                     short_time(data["last_run_at"]), s.last_job_id or "-",
                     clip(s.command, 40)])
    table(["NAME", "CADENCE", "NEXT RUN", "LAST RUN", "LAST JOB", "COMMAND"], rows)


@schedule.command("show")
@click.argument("name")
@json_option
@pass_state
def show(state: State, name: str, as_json: bool) -> None:
    """Show a schedule, its next 5 fire times and its last 10 firings."""
    from ..schedules import describe_cadence, schedule_view
    from ..timeutil import now_ms

    store = _store(state.app())
    found = _get(store, name)
    firings = store.schedule_firings(name, 10)
    view = schedule_view(found, firings, now_ms())
    if as_json:
        emit_json(view)
        return
    data = found.to_json()
    click.echo(f"Schedule {found.name}: {describe_cadence(found)}"
               + (" (paused)" if found.paused else ""))
    for key in ("command", "queue", "priority", "timeout", "max_retries", "cwd", "overlap",
                "catchup", "source", "last_run_at", "last_job_id"):
        if data.get(key) is not None:
            click.echo(f"  {key}: {data[key]}")
    if found.queued:
        click.echo(f"  queued ticks: {', '.join(data['queued'])}")
    click.echo("Next runs:" if view["next_runs"] else "Next runs: none")
    for tick in view["next_runs"]:
        click.echo(f"  {tick}")
    click.echo("Last firings:" if firings else "Last firings: none")
    for f in view["firings"]:
        click.echo(f"  {f['tick']}  {f['outcome']:<8} {f['job_id'] or '-'}")


def _pause(state: State, name: str, pause: bool, as_json: bool) -> None:
    from ..schedules import paused
    from ..timeutil import now_ms

    app = state.app()
    store = _store(app)
    for _ in range(5):
        found = _get(store, name)
        if found.paused == pause:
            changed = False
            break
        if store.put_schedule(paused(found, now_ms(), pause), found.version):
            changed = True
            break
    else:
        raise QueuectlError(f"schedule {name!r} keeps changing; try again")
    if not pause:
        _wake(app)
    if as_json:
        emit_json({"name": name, "paused": pause, "changed": changed})
        return
    word = "paused" if pause else "resumed"
    click.echo(f"Schedule '{name}' {word}." if changed
               else f"Schedule '{name}' was already {'paused' if pause else 'running'}.")


@schedule.command("pause")
@click.argument("name")
@json_option
@pass_state
def pause_cmd(state: State, name: str, as_json: bool) -> None:
    """Stop a schedule from firing (its jobs already made still run)."""
    _pause(state, name, True, as_json)


@schedule.command("resume")
@click.argument("name")
@json_option
@pass_state
def resume_cmd(state: State, name: str, as_json: bool) -> None:
    """Let a paused schedule fire again, from its next tick on."""
    _pause(state, name, False, as_json)


@schedule.command("remove")
@click.argument("name")
@json_option
@pass_state
def remove(state: State, name: str, as_json: bool) -> None:
    """Remove a schedule; the jobs it made are kept."""
    app = state.app()
    store = _store(app)
    _get(store, name)
    if name in _declared(app):
        raise QueuectlError(f"schedule {name!r} is declared in the YAML file "
                            f"({app.config.config_path}), which wins: running workers would "
                            "add it again; remove it there")
    if not store.remove_schedule(name):
        raise ScheduleNotFoundError(name)
    if as_json:
        emit_json({"name": name, "removed": True})
        return
    click.echo(f"Removed schedule '{name}' (its jobs are kept).")


@schedule.command("run")
@click.argument("name")
@json_option
@pass_state
def run(state: State, name: str, as_json: bool) -> None:
    """Fire a schedule once now, outside its cadence (paused or not)."""
    from ..schedules import manual_fire
    from ..timeutil import now_ms

    app = state.app()
    store = _store(app)
    for _ in range(5):
        found = _get(store, name)
        fire = manual_fire(found, now_ms(), default_max_retries=_max_retries(app))
        if store.fire_schedule(fire):
            break
    else:
        raise QueuectlError(f"schedule {name!r} keeps changing; try again")
    _wake(app)
    job = fire.jobs[0]
    if as_json:
        emit_json(job.to_json())
        return
    click.echo(f"Enqueued job {job.id} for schedule '{name}'.")


__all__ = ["schedule"]
