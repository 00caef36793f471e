"""Typed registration records that plugins return from the registration
hooks. The core selects records by name, never by hook order."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from pydantic import BaseModel

    from .executor import Executor
    from .models import Settings
    from .storage import Storage

_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")


def normalize_name(name: str) -> str:
    """Names are lower case; ``-`` and ``_`` are the same."""
    norm = name.strip().lower().replace("_", "-")
    if not _NAME.match(norm):
        raise ValueError(f"invalid plugin record name {name!r}")
    return norm


@dataclass(frozen=True)
class PluginContext:
    """What a factory gets besides its options."""

    #: QUEUECTL_HOME: where a plugin keeps any local state (files, sockets).
    home: Path


class BackoffPolicy(Protocol):
    """Decides how long to wait before the next attempt."""

    def delay_seconds(self, attempts: int, settings: Settings) -> float:
        """Seconds to wait after a failed attempt, ``attempts`` being the
        number of attempts made so far (1 after the first)."""
        ...


@dataclass(frozen=True)
class _Record:
    name: str
    description: str = ""
    #: A pydantic model (use ``extra="forbid"``) validating the plugin's
    #: options from YAML, or its import path as ``"package.module:Class"``
    #: (imported only when the YAML gives options, so that commands that need
    #: none stay fast); None if it takes no options. The factory receives an
    #: instance, or None when the YAML has no options for it (use defaults).
    options_model: type[BaseModel] | str | None = None
    #: Filled in by the plugin manager: the distribution that registered it.
    distribution: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", normalize_name(self.name))

    def resolve_options_model(self) -> type[BaseModel] | None:
        """The options model class, importing it if it was given by path."""
        ref = self.options_model
        if not isinstance(ref, str):
            return ref
        import importlib

        module, _, attr = ref.partition(":")
        model: type[BaseModel] = getattr(importlib.import_module(module), attr)
        return model


@dataclass(frozen=True)
class BackendSpec(_Record):
    """A storage backend. ``factory(options, context)`` returns a Storage;
    ``options`` is an instance of ``options_model`` (or None)."""

    factory: Callable[[Any, PluginContext], Storage] | None = None
    #: Optional: ``"package.module:function"`` of a light opener for the CLI's
    #: fast path (``queuectl enqueue JSON`` and ``queuectl status`` without
    #: click, pluggy or the models): ``function(options, home) -> FastStore |
    #: None`` where ``options`` is the validated options model dumped as JSON
    #: (or None) and ``home`` is QUEUECTL_HOME as a string. The module must
    #: import nothing heavy. See :class:`FastStore` and docs/writing-plugins.md.
    fast_path: str | None = None


@dataclass(frozen=True)
class ExecutorSpec(_Record):
    """An executor. ``factory(options, context)`` returns an Executor."""

    factory: Callable[[Any, PluginContext], Executor] | None = None


@dataclass(frozen=True)
class BackoffPolicySpec(_Record):
    """A retry delay policy. ``factory(options)`` returns a BackoffPolicy."""

    factory: Callable[[Any], BackoffPolicy] | None = None


class FastStore(Protocol):
    """What a backend's ``fast_path`` opener returns: just enough of a store
    for ``queuectl enqueue JSON`` and ``queuectl status`` (see
    ``queuectl_core/fastpath.py``). Any exception, or ``enqueue`` returning
    False, makes the CLI fall back to the full command, which then reports
    errors its usual way; so the fast path may decline whatever it does not
    handle exactly as the full store would."""

    def describe(self) -> str:
        """The same text as the store's ``describe()``."""

    def stored_settings(self) -> dict[str, Any]:
        """Runtime settings stored with ``config set`` (key -> JSON value)."""

    def enqueue(self, job: dict[str, Any]) -> bool:
        """Store one new pending job given by the fields of ``NewJob`` and
        commit; False, with nothing stored, when the id is taken."""

    def counts(self, queue: str | None = None) -> dict[str, int]:
        """Jobs per state name (states without jobs may be left out)."""

    def worker_heartbeats(self) -> list[int]:
        """The last heartbeat (epoch ms) of every registered worker."""

    def paused_queues(self) -> list[str]:
        """Paused queue names, sorted."""

    def close(self) -> None:
        """Release the connection."""
