"""Configuration commands: config get/set, plugins."""

from __future__ import annotations

import click

from .jobs import json_option
from .main import State, pass_state
from .output import emit_json, number, table


@click.group()
def config() -> None:
    """Runtime settings, stored in the queue so every worker sees them.

    \b
    Keys (max-retries and max_retries are the same key):
      max_retries        retries after the first attempt (default 3)
      backoff_base       retry delay is backoff_base ** attempts seconds (default 2)
      worker_idle_delay  ms an idle worker waits between polls (default 2000)
      lease_seconds      a claimed job's lease; heartbeats renew it (default 15)
      max_delay          longest retry delay in seconds; 0: no cap (default 0)
      jitter             cut each retry delay by a random fraction up to this (0..1)
      job_timeout        seconds a job without its own timeout may run; 0: no limit
      output_max_bytes   cap on each attempt's stdout and stderr on disk (10 MiB)
      output_tail_bytes  end of each stream kept in the store, for logs (4096)
      retention_days     purge completed/cancelled jobs this long after; 0: keep
    Running workers pick up changes without a restart: an idle worker at its
    next poll (worker_idle_delay), a busy one at its next heartbeat (every
    lease_seconds / 3).
    """


@config.command("get")
@click.argument("key", required=False)
@json_option
@pass_state
def get(state: State, key: str | None, as_json: bool) -> None:
    """Show effective settings (all, or one KEY)."""
    from ..settings import normalize_setting_key

    app = state.app()
    values = app.settings().as_dict()
    if key is not None:
        norm = normalize_setting_key(key)
        values = {norm: values[norm]}
    if as_json:
        emit_json(values)
        return
    for name, value in values.items():
        click.echo(f"{name}: {number(value)}")


@config.command("set", context_settings={"ignore_unknown_options": True})
@click.argument("key")
@click.argument("value")
@pass_state
def set_(state: State, key: str, value: str) -> None:
    """Change a setting for every worker that shares this queue."""
    from ..settings import normalize_setting_key, parse_setting_value

    norm = normalize_setting_key(key)
    parsed = parse_setting_value(norm, value)
    state.app().ledger.set_setting(norm, parsed)
    click.echo(f"Config updated: {norm} = {number(parsed)}")


@click.command("plugins")
@json_option
@pass_state
def plugins_cmd(state: State, as_json: bool) -> None:
    """List installed plugins: name, version, status and what each provides.

    A plugin that failed to load, or one of whose registration hooks raised
    or returned something other than records, is FAILED; why is said below
    the table."""
    plugins = state.app().plugins
    plugins.collect_all()
    # Every plugin: those that loaded, then those that failed to.
    rows = [(p.name, p.distribution, p.version, p.provides) for p in plugins.loaded]
    rows += [(f.name, f.distribution, f.version, []) for f in plugins.failures
             if f.hook is None]
    errors = {name: "; ".join(f.message for f in plugins.failures_of(name))
              for name, *_ in rows}
    if as_json:
        emit_json({
            "plugins": [{"name": name, "distribution": dist, "version": version,
                         "provides": provides,
                         "status": "FAILED" if errors[name] else "ok",
                         "error": errors[name] or None}
                        for name, dist, version, provides in rows],
            "failed": [{"name": f.name, "distribution": f.distribution, "version": f.version,
                        "hook": f.hook, "error": f.error, "message": f.message}
                       for f in plugins.failures],
        })
        return
    table(["PLUGIN", "DISTRIBUTION", "VERSION", "STATUS", "PROVIDES"],
          [[name, dist, version, "FAILED" if errors[name] else "ok",
            ", ".join(provides) or "-"] for name, dist, version, provides in rows])
    for f in plugins.failures:
        click.echo(f.message)
