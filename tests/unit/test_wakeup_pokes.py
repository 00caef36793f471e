"""Local wake-ups (``queuectl_core.wakeup``): pokes that wake idle workers,
told apart from the pokes of a cancel."""

from __future__ import annotations

import select
import socket
from pathlib import Path

from queuectl_core.wakeup import WakeupListener, notify, wake_dir


def test_notify_wakes_a_listener_and_drain_clears_it(tmp_path: Path) -> None:
    listener = WakeupListener(tmp_path)
    try:
        assert select.select([listener], [], [], 0)[0] == []
        notify(tmp_path)
        assert select.select([listener], [], [], 1.0)[0] == [listener]
        listener.drain()
        assert select.select([listener], [], [], 0)[0] == []
    finally:
        listener.close()
    assert not listener.path.exists()


def test_a_cancel_poke_is_told_from_pokes_for_new_work(tmp_path: Path) -> None:
    listener = WakeupListener(tmp_path)
    try:
        assert listener.cancel_poked() is False  # nothing waiting
        notify(tmp_path)
        notify(tmp_path)
        assert listener.cancel_poked() is False
        assert select.select([listener], [], [], 0)[0] == [], "drained"
        notify(tmp_path)
        notify(tmp_path, cancel=True)
        notify(tmp_path)
        assert listener.cancel_poked() is True
        assert select.select([listener], [], [], 0)[0] == [], "drained"
        assert listener.cancel_poked() is False
    finally:
        listener.close()


def test_stale_sockets_are_removed_and_nothing_raises(tmp_path: Path) -> None:
    directory = wake_dir(tmp_path)
    directory.mkdir(parents=True)
    stale = directory / "999999"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(stale))
    sock.close()  # bound then closed: nobody listens any more
    (directory / "not-a-socket").write_text("x")
    notify(tmp_path)
    assert not stale.exists()
    notify(tmp_path / "no-such-home")


def test_many_pokes_never_block(tmp_path: Path) -> None:
    listener = WakeupListener(tmp_path)
    try:
        for _ in range(10_000):
            notify(tmp_path)  # the buffer fills; extra pokes are dropped
    finally:
        listener.close()


def test_poke_others_wakes_every_listener_but_its_own(tmp_path: Path) -> None:
    listener = WakeupListener(tmp_path)
    other = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    other.bind(str(wake_dir(tmp_path) / "other"))
    try:
        listener.poke_others()
        assert select.select([other], [], [], 1.0)[0] == [other]
        assert select.select([listener], [], [], 0)[0] == [], "not itself"
    finally:
        other.close()
        listener.close()
