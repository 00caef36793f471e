"""Finding the DSN and keeping its password out of every message.

Standard library only: imported by the plugin's light ``__init__`` and by
the store, never pulling in psycopg.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping

from queuectl_core.errors import ConfigError

#: Environment variable read when ``backends.postgres.dsn`` is not set.
DSN_ENV = "QUEUECTL_POSTGRES_DSN"

MASK = "***"

# scheme://user:secret@host  ->  scheme://user:***@host
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^\s:/?#@]*):(?P<secret>[^\s@/]*)@")
# password=secret, password = 'se cret', ?password=secret&..., PGPASSWORD=secret
_KV_PASSWORD = re.compile(
    r"(?P<head>\b(?:pg)?pass(?:word)?\s*=\s*)(?P<secret>'(?:[^'\\]|\\.)*'?|[^\s&'\"]+)",
    re.IGNORECASE,
)
#: A known password shorter than this is not replaced literally in messages
#: (replacing every "a" would garble them); the patterns above still apply.
_MIN_LITERAL = 4


def mask_secrets(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every password hidden: the password of a URL DSN
    (``postgresql://u:secret@h/db``), the value of ``password=...`` pairs
    (key=value DSNs and URL query strings), and any of ``secrets`` (the
    configured password, also when a message quotes it some other way)."""
    masked = _URL_PASSWORD.sub(lambda m: f"{m['head']}:{MASK}@", text)
    masked = _KV_PASSWORD.sub(lambda m: f"{m['head']}{MASK}", masked)
    for secret in secrets:
        if secret and len(secret) >= _MIN_LITERAL:
            masked = masked.replace(secret, MASK)
    return masked


def resolve_dsn(configured: str | None, environ: Mapping[str, str] | None = None) -> str:
    """The DSN from the options, else from ``QUEUECTL_POSTGRES_DSN``; a
    ConfigError if neither is set."""
    if configured is not None and configured.strip():
        return configured.strip()
    env = os.environ if environ is None else environ
    value = env.get(DSN_ENV, "").strip()
    if value:
        return value
    raise ConfigError(
        "the postgres backend needs a database: set backends.postgres.dsn in queuectl.yaml "
        f"or the {DSN_ENV} environment variable (e.g. postgresql://user@host:5432/dbname)"
    )
