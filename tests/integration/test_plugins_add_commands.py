"""A plugin adds a command (the ``queuectl_cli_commands`` hook): it runs,
takes the global options after its name, is listed by --help and
``plugins`` and "Did you mean"; a core command's name stays the core's, and the hot path
(``status`` through the start-up cache) never loads plugin commands."""

from __future__ import annotations

import json

import pytest

from tests.fake_dists import fake_dist

from .conftest import Queue

pytestmark = pytest.mark.backends("sqlite")

HELLO = """
import click
from queuectl_core import hookimpl
from queuectl_core.registry import CommandSpec

@click.command()
@click.option("--name", default="world")
@click.pass_context
def hello(ctx, name):
    from queuectl_core.cli.main import State
    app = ctx.find_object(State).app()
    click.echo(f"hello {name} from {app.config.home_dir}")

def make(options, context):
    assert options is None and context.plugin == "hello"
    return hello

def make_status(options, context):
    raise AssertionError("a core command's name is never a plugin's")

@hookimpl
def queuectl_cli_commands():
    return [CommandSpec(name="hello", factory="qc_hello:make", description="Say hello."),
            CommandSpec(name="status", factory="qc_hello:make_status")]
"""


def test_a_plugin_command_runs_and_never_shadows_a_core_one(queue: Queue) -> None:
    site = queue.home.parent / "site"
    fake_dist(site, "queuectl-hello", {"hello": "qc_hello"}, {"qc_hello": HELLO})
    queue.env["PYTHONPATH"] = str(site)
    other = queue.home.parent / "other-home"
    assert queue.run("hello", "--name", "you", "--home", str(other)).stdout == \
        f"hello you from {other}\n"
    help_text = queue.run("--help").stdout
    assert "Commands from plugins:\n  hello  Say hello.\n" in help_text
    assert json.loads(queue.run("status", "--json").stdout)["pending"] == 0
    debug = {**queue.env, "QUEUECTL_STARTUP_CACHE": "debug"}
    cached = queue.run("status", env=debug)
    assert "start-up cache: used" in cached.stderr and "loaded []" in cached.stderr
    plugins = json.loads(queue.run("plugins", "--json").stdout)["plugins"]
    provides = {p["name"]: p["provides"] for p in plugins}
    assert "command hello" in provides["hello"]
    res = queue.run("helo", check=False)
    assert res.returncode == 2 and "Did you mean 'hello'?" in res.stderr
