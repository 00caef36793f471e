"""What keeps the dashboard safe by default: the token that actions need,
where it may listen, and what it never shows (env values, secrets)."""

from __future__ import annotations

import hmac
import ipaddress
import os
import stat

from queuectl_core.errors import UsageError

#: The environment variable that may hold the token (else --token-file).
TOKEN_ENV = "QUEUECTL_WEB_TOKEN"
#: The request headers that carry it (either).
TOKEN_HEADER = "X-Queuectl-Token"
#: What a masked value shows.
MASK = "••••••"
#: A token shorter than this is refused (guessable).
MIN_TOKEN_CHARS = 16


def is_loopback(host: str) -> bool:
    """Does ``host`` (an address or ``localhost``) listen on this machine only?"""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve anywhere


def read_token(token_file: str | None) -> str | None:
    """The token from ``token_file`` (first line), else from
    :data:`TOKEN_ENV`, else None. A token file others can read, or a short
    token, is refused."""
    if token_file is not None:
        try:
            fd = os.open(token_file, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as exc:
            raise UsageError(f"--token-file {token_file}: {exc.strerror}") from None
        with os.fdopen(fd, "rb") as fh:
            if stat.S_IMODE(os.fstat(fh.fileno()).st_mode) & 0o077:
                raise UsageError(f"--token-file {token_file}: other users can read it; "
                                 f"chmod 600 {token_file}")
            lines = fh.read(4096).decode("utf-8", "replace").splitlines()
        token = lines[0].strip() if lines else ""
        where = f"--token-file {token_file}"
    else:
        token = os.environ.get(TOKEN_ENV, "").strip()
        where = TOKEN_ENV
        if not token:
            return None
    if len(token) < MIN_TOKEN_CHARS:
        raise UsageError(f"{where}: the token must be at least {MIN_TOKEN_CHARS} characters "
                         "(e.g. from: python -c 'import secrets; print(secrets.token_urlsafe())')")
    return token


def check_listening(host: str, token: str | None, allow_actions: bool) -> None:
    """Refuse what is unsafe: listening beyond loopback, or allowing
    actions, without a token."""
    if token is None and not is_loopback(host):
        raise UsageError(f"refusing to listen on {host} without a token: give --token-file "
                         f"or {TOKEN_ENV} (or listen on 127.0.0.1 behind a proxy)")
    if allow_actions and token is None:
        raise UsageError(f"--allow-actions needs a token: give --token-file or {TOKEN_ENV}")


def token_matches(expected: str | None, given: str | None) -> bool:
    """Constant-time comparison; no token configured matches nothing."""
    if expected is None or given is None:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


def masked_env(env: dict[str, str] | None) -> dict[str, str] | None:
    """A job's env with every value hidden (the names stay)."""
    return None if env is None else dict.fromkeys(env, MASK)
