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
    """List installed plugins: name, version and what each provides."""
    plugins = state.app().plugins
    plugins.collect_all()
    if as_json:
        emit_json({
            "plugins": [{"name": p.name, "distribution": p.distribution, "version": p.version,
                         "provides": p.provides} for p in plugins.loaded],
            "failed": [{"name": f.name, "distribution": f.distribution, "error": f.error}
                       for f in plugins.failures],
        })
        return
    table(["PLUGIN", "DISTRIBUTION", "VERSION", "PROVIDES"],
          [[p.name, p.distribution, p.version, ", ".join(p.provides) or "-"]
           for p in plugins.loaded])
    for f in plugins.failures:
        click.echo(f"FAILED {f.name} ({f.distribution}): {f.error}")
