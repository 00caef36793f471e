"""Workers refuse to run from a queue that other users can change: anyone
who can write the queue (or the config that picks it) can run commands as
the worker's user. Like ssh's StrictModes, a queue must also belong to the
caller or to root, whoever the caller is (root too), unless
``QUEUECTL_TRUST_OWNER`` names its owner: purging or stopping the workers of
someone else's queue would otherwise let its owner pick what root deletes
or signals."""

from __future__ import annotations

import os
import pwd
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import QueuectlError

if TYPE_CHECKING:
    from .app import App


class UnsafePermissionsError(QueuectlError):
    """A file or directory the workers trust is writable by other users."""


#: Names the owners (user names or uids, comma-separated) whose queues the
#: caller trusts besides its own and root's; see docs/cli.md.
TRUST_ENV = "QUEUECTL_TRUST_OWNER"

#: What the owner of a queue could do to whoever runs each kind of command.
_RISK = {
    "run workers": "run commands as you",
    "purge": "make you delete or write files outside it",
    "stop workers": "make you signal any process",
}


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def trusted_owners() -> set[int]:
    """The uids ``QUEUECTL_TRUST_OWNER`` names (an unknown user name is an
    error: a typo must not silently trust nobody, or somebody else)."""
    raw = os.environ.get(TRUST_ENV, "")
    uids: set[int] = set()
    for part in raw.split(","):
        name = part.strip()
        if not name:
            continue
        if name.isdigit():
            uids.add(int(name))
            continue
        try:
            uids.add(pwd.getpwnam(name).pw_uid)
        except KeyError:
            raise UnsafePermissionsError(
                f"{TRUST_ENV}: no user named {name!r} (give user names or uids, "
                "comma-separated)") from None
    return uids


def check_not_writable_by_others(paths: Iterable[Path], doing: str = "run workers") -> None:
    """Raise UnsafePermissionsError naming the first path (or parent
    directory of a file) that group or others may write, or that belongs to
    a user other than the caller and root, unless ``QUEUECTL_TRUST_OWNER``
    names that user (as ssh's StrictModes: root is checked like anyone).
    ``doing`` says what is refused ("run workers", "purge", "stop workers")."""
    uid = os.geteuid()
    trusted: set[int] | None = None
    seen: set[Path] = set()
    for path in paths:
        for target in (path, path.parent) if path.is_file() else (path,):
            if target in seen:
                continue
            seen.add(target)
            try:
                st = target.stat()
            except FileNotFoundError:
                continue
            mode = stat.S_IMODE(st.st_mode)
            sticky = bool(st.st_mode & stat.S_ISVTX)
            if mode & 0o022 and not (sticky and target != path):
                who = ("group and others" if mode & 0o022 == 0o022
                       else "group" if mode & 0o020 else "others")
                raise UnsafePermissionsError(
                    f"refusing to {doing}: {target} is writable by {who} (mode {mode:04o}),"
                    " and anyone who can write the queue can run commands as you; fix it with:"
                    f" chmod go-w '{target}'")
            if st.st_uid in (uid, 0):
                continue
            if trusted is None:
                trusted = trusted_owners()
            if st.st_uid in trusted:
                continue
            owner = _user_name(st.st_uid)
            allowed = "you (root)" if uid == 0 else f"you ({_user_name(uid)}) or root"
            raise UnsafePermissionsError(
                f"refusing to {doing}: {target} belongs to {owner} (uid {st.st_uid}),"
                f" not to {allowed}, and its owner could"
                f" {_RISK.get(doing, 'act as you')}; use a QUEUECTL_HOME of your own,"
                f" or trust that user with {TRUST_ENV}={owner}")


def check_home_trusted(app: App, doing: str, *, store: bool = True) -> None:
    """:func:`check_not_writable_by_others` for everything of ``app``'s queue
    on this machine: the home, the config file and (with ``store``, which
    opens it) the store's files."""
    first = [app.config.home]
    if app.config.config_path is not None:
        first.append(app.config.config_path)
    # The home before opening the store: opening it may create files there.
    check_not_writable_by_others(first, doing)
    if store:
        check_not_writable_by_others([*first, *app.ledger.local_paths()], doing)
