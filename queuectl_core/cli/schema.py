"""``queuectl schema job|config``: JSON Schemas for editors and CI."""

from __future__ import annotations

import click

from .output import emit_json


@click.command("schema")
@click.argument("kind", type=click.Choice(["job", "config"]))
def schema_cmd(kind: str) -> None:
    """Print the JSON Schema of a job (what 'enqueue' takes, one line of
    'enqueue --file') or of the YAML config file.

    \b
      queuectl schema job > queuectl-job.schema.json
      queuectl schema config > queuectl.schema.json
    """
    from ..schema import json_schema

    emit_json(json_schema(kind))
