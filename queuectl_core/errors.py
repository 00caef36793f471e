"""Exceptions that carry a user-facing message and an exit code.

The CLI prints ``Error: <message>`` on one line and exits with ``exit_code``;
anything else that escapes is an internal error.
"""

from __future__ import annotations


class QueuectlError(Exception):
    """Base class: an operational failure (exit code 1)."""

    exit_code = 1


class UsageError(QueuectlError):
    """Bad input from the user: invalid JSON, unknown key, bad value (exit 2)."""

    exit_code = 2


class ConfigError(UsageError):
    """The YAML configuration or a runtime setting is invalid (exit 2)."""


class PluginError(QueuectlError):
    """A plugin is missing, broken or ambiguous (exit 1)."""


class StorageError(QueuectlError):
    """The selected storage backend cannot do what was asked (exit 1)."""


class TransientStorageError(StorageError):
    """The backend cannot be reached right now (a database server
    restarting, a network blip). Workers wait and retry instead of exiting;
    the same call may succeed later. Nothing was changed by the failed call,
    or the change was committed whole: never half."""


class StoreDamagedError(StorageError):
    """The store's files are damaged (a malformed SQLite page, a JSON file
    that does not parse): no retry can help. A worker that meets it exits
    with ``STORE_DAMAGED_EXIT``, and its supervisor stops the whole group
    instead of restarting workers that would fail the same way."""


#: A worker's exit code when the store is damaged (see StoreDamagedError).
STORE_DAMAGED_EXIT = 3


class DiskFullError(TransientStorageError):
    """The file system holding the store is full (ENOSPC, a quota): nothing
    was changed. Workers back off and retry until space is freed; commands
    fail with a message that says so plainly."""


#: errno values that mean "no space left": ENOSPC, EDQUOT.
DISK_FULL_ERRNOS = frozenset({28, 122})


def disk_full(where: object, detail: object) -> DiskFullError:
    """The error for a write to ``where`` that found the disk full."""
    return DiskFullError(f"disk full: cannot write {where} ({detail}); free some space "
                         "(workers wait and retry)")


class JobNotFoundError(QueuectlError):
    """No job with that id."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job with id {job_id!r}")
        self.job_id = job_id


class DuplicateJobError(QueuectlError):
    """A job with that id already exists; nothing was stored."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"a job with id {job_id!r} already exists (nothing was stored)")
        self.job_id = job_id


class InvalidStateError(QueuectlError):
    """The job exists but is not in a state that allows the operation."""


class UniqueKeyError(QueuectlError):
    """An unfinished job holds the ``unique_key`` asked for; nothing was
    stored (or changed)."""

    def __init__(self, key: str, holder: str) -> None:
        super().__init__(f"unique key {key!r} is held by job {holder!r}, which is not "
                         "finished (nothing was stored)")
        self.key = key
        self.holder = holder


class UnknownParentError(JobNotFoundError):
    """A job to enqueue runs after a job that does not exist."""

    def __init__(self, job_id: str, parent_id: str) -> None:
        QueuectlError.__init__(self, f"job {job_id!r} runs after {parent_id!r}, which does "
                               "not exist (nothing was stored)")
        self.job_id = parent_id


class NeedsWholeBatch(QueuectlError):
    """A streamed enqueue met a job that must be placed with the whole batch
    (it runs after others, or holds a key); nothing was stored."""


class ChangedMeanwhile(StorageError):
    """A guarded write found a job changed since it was read; nothing was
    written. The core reads again and decides again."""


def shown(text: str) -> str:
    """User text for a one-line message: as is when printable, else its
    escaped repr (a newline in a field name or path must not break the
    line)."""
    return text if text.isprintable() else repr(text)
