"""Waking idle workers on this machine when work arrives.

Each worker binds a Unix datagram socket ``$QUEUECTL_HOME/run/wake/<pid>``;
``enqueue`` and ``dlq retry`` send one byte to every socket there after
their change is stored. An idle worker sleeps in ``select`` on its socket,
so a new job starts at once instead of after the poll interval. Polling
stays as the fallback (another machine, a full socket buffer, a path too
long for a socket), so a lost wake-up only costs latency.

``cancel`` of a running job sends a different byte, a *cancel poke*: a busy
worker starts a job it claimed ahead without reading it again only if no
cancel poke came since the claim (``Worker._unchanged``). New work does not
make it read its held jobs again. A cancel poke lost (a full socket buffer,
an older queuectl that pokes as for new work) costs a moment of the job's
command: ``cancel`` looks for it for a second and stops it.
"""

from __future__ import annotations

import os

# Light on purpose: the CLI's hot path (enqueue) calls notify(), so neither pathlib,
# typing nor contextlib is imported at run time here.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket
    from pathlib import Path

#: sun_path is 108 bytes on Linux, including the terminating NUL.
_MAX_SOCKET_PATH = 107

#: What a poke says: work arrived, or a cancel was stored.
WORK = b"!"
CANCEL = b"c"


def _wake_dir_path(home: str | os.PathLike[str]) -> str:
    return os.path.join(home, "run", "wake")


def wake_dir(home: Path) -> Path:
    from pathlib import Path

    return Path(_wake_dir_path(home))


class WakeupListener:
    """A worker's wake-up socket; ``fileno()`` becomes readable on a poke."""

    def __init__(self, home: Path) -> None:
        import socket

        from .config import ensure_private_dir

        directory = wake_dir(home)
        ensure_private_dir(directory)

        self.path = directory / str(os.getpid())
        if len(os.fsencode(self.path)) > _MAX_SOCKET_PATH:
            raise OSError(f"socket path too long: {self.path}")
        self.path.unlink(missing_ok=True)
        self.sock: socket.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.sock.bind(os.fspath(self.path))
        os.chmod(self.path, 0o600)

    def fileno(self) -> int:
        return self.sock.fileno()

    def drain(self) -> None:
        """Empty the socket without waiting (what the pokes said is not needed)."""
        self.cancel_poked()

    def cancel_poked(self) -> bool:
        """Drain the socket without waiting: was a cancel poke among what
        was waiting?"""
        cancel = False
        while True:
            try:
                data = self.sock.recv(64)
            except BlockingIOError:
                return cancel
            except OSError:
                return True  # cannot tell: as if a cancel (the caller then reads the store)
            if not data:
                return cancel
            cancel = cancel or data != WORK

    def poke_others(self) -> None:
        """Poke every other idle worker of this home on this machine (a job
        this worker held became claimable again); never raises."""
        _poke_all(os.fspath(self.path.parent), skip=os.fspath(self.path))

    def close(self) -> None:
        self.sock.close()
        try:
            self.path.unlink()
        except OSError:
            pass


def notify(home: str | os.PathLike[str], *, cancel: bool = False) -> None:
    """Poke every worker of ``home`` on this machine: new work, or with
    ``cancel`` a cancel stored; never raises."""
    _poke_all(_wake_dir_path(home), message=CANCEL if cancel else WORK)


def _poke_all(directory: str, skip: str | None = None, message: bytes = WORK) -> None:
    """Send ``message`` to every socket in ``directory`` but ``skip``."""
    try:
        entries = [e for e in os.scandir(directory) if e.path != skip]
    except OSError:
        return
    if not entries:
        return
    # The C module: ``socket`` itself costs several ms of enum set-up at import.
    import _socket

    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM)
    sock.setblocking(False)
    try:
        for entry in entries:
            try:
                sock.sendto(message, entry.path)
            except (ConnectionRefusedError, FileNotFoundError):
                try:
                    os.unlink(entry.path)  # its worker is gone
                except OSError:
                    pass
            except OSError:
                pass  # buffer full (already poked) or not a socket: polling covers it
    finally:
        sock.close()
