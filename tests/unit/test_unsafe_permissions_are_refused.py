"""Workers and the CLI refuse queue files and directories that other users
could write (``queuectl_core.security``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from queuectl_core.security import UnsafePermissionsError, check_not_writable_by_others


def test_private_paths_are_accepted(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    db = home / "queue.db"
    db.write_text("")
    os.chmod(db, 0o600)
    check_not_writable_by_others([home, db, tmp_path / "missing"])


@pytest.mark.parametrize(("mode", "who"), [(0o777, "group and others"), (0o702, "others"),
                                           (0o720, "group")])
def test_writable_directory_is_refused(tmp_path: Path, mode: int, who: str) -> None:
    home = tmp_path / "home"
    home.mkdir()
    os.chmod(home, mode)
    with pytest.raises(UnsafePermissionsError, match=f"writable by {who}.*chmod go-w"):
        check_not_writable_by_others([home])


def test_writable_file_or_parent_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    config = home / "queuectl.yaml"
    config.write_text("backend: sqlite\n")
    os.chmod(config, 0o666)
    with pytest.raises(UnsafePermissionsError, match=r"queuectl\.yaml"):
        check_not_writable_by_others([config])
    os.chmod(config, 0o600)
    os.chmod(home, 0o775)
    with pytest.raises(UnsafePermissionsError, match="home"):
        check_not_writable_by_others([config])


def test_a_sticky_shared_parent_is_allowed(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)  # like /tmp
    config = shared / "queuectl.yaml"
    config.write_text("")
    os.chmod(config, 0o600)
    check_not_writable_by_others([config])
