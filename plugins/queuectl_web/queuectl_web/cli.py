"""``queuectl serve``: the dashboard, ``/metrics`` and the JSON API, served by
uvicorn. Added to the command line through the ``queuectl_cli_commands``
hook (:mod:`.plugin`)."""

from __future__ import annotations

from typing import Any

import click

from queuectl_core.registry import PluginContext

from .guard import TOKEN_ENV, check_listening, is_loopback, read_token


def serve_command(options: Any, context: PluginContext) -> click.Command:
    """The command's factory (``CommandSpec.factory``)."""
    return serve


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Beyond loopback it needs a token.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535),
              help="Port to listen on (0: any free one, printed at start).")
@click.option("--allow-actions", is_flag=True,
              help="Allow retry, cancel, pause, resume and DLQ retry (needs a token).")
@click.option("--token-file", metavar="PATH",
              help=f"File whose first line is the token actions need (else ${TOKEN_ENV}); "
                   "readable by you only.")
@click.option("--root-path", default="", metavar="PREFIX",
              help="The URL prefix a reverse proxy serves it under, e.g. /queuectl.")
def serve(host: str, port: int, allow_actions: bool, token_file: str | None,
          root_path: str) -> None:
    """Serve the web dashboard, Prometheus /metrics and a JSON API (/api/).

    Read-only unless --allow-actions. Actions need the token in the
    X-Queuectl-Token header (the dashboard has a field for it). The pages
    escape everything and never show env values or a DSN password.
    """
    import uvicorn

    from queuectl_core.cli.main import State

    from .reader import Reader
    from .server import create_app

    token = read_token(token_file)
    check_listening(host, token, allow_actions)
    state = click.get_current_context().find_object(State)
    assert state is not None
    reader = Reader(state.app())
    reader.describe()  # open the store now: its errors before listening
    app = create_app(reader, token=token, allow_actions=allow_actions,
                     root_path=root_path.rstrip("/"))
    config = uvicorn.Config(app, host=host, port=port, log_level="warning",
                            proxy_headers=True, server_header=False)
    server = uvicorn.Server(config)
    where = f"[{host}]" if ":" in host else host

    original = server.startup

    async def startup(sockets: Any = None) -> None:
        await original(sockets)
        bound = port
        for s in server.servers:
            for sock in s.sockets:
                bound = sock.getsockname()[1]
        mode = "actions allowed" if allow_actions else "read-only"
        click.echo(f"Serving {reader.describe()} on http://{where}:{bound}{root_path} ({mode}"
                   f"{'' if is_loopback(host) else ', token required for actions'}); "
                   "Ctrl-C stops.", err=True)

    server.startup = startup  # type: ignore[method-assign]
    server.run()
