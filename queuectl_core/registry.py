"""Typed registration records that plugins return from the registration
hooks. The core selects records by name, never by hook order.

Every kind of plugin has one shape: a record naming it, an options model
(pydantic, validating its YAML options) and ``factory(options, context)``.
Both the model and the factory may be given as an import path
(``"package.module:name"``), so that listing plugins imports neither.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from .executor import Executor
from .storage import Storage

if TYPE_CHECKING:
    from pydantic import BaseModel

    from .settings import Settings

_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
T = TypeVar("T")


def normalize_name(name: str) -> str:
    """Names are lower case; ``-`` and ``_`` are the same."""
    norm = name.strip().lower().replace("_", "-")
    if not _NAME.match(norm):
        raise ValueError(f"invalid plugin record name {name!r}")
    return norm


def import_path(ref: str) -> Any:
    """The object named by ``"package.module:name"``."""
    import importlib

    module, _, attr = ref.partition(":")
    obj: Any = importlib.import_module(module.strip())
    for part in filter(None, attr.strip().split(".")):
        obj = getattr(obj, part)
    return obj


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
class _Record(Generic[T]):
    name: str
    #: ``factory(options, context)`` builds the plugin's object; ``options``
    #: is an instance of ``options_model``, or None when the YAML gives no
    #: options for it (use defaults). A callable, or its import path.
    factory: Callable[[Any, PluginContext], T] | str | None = None
    description: str = ""
    #: A pydantic model (use ``extra="forbid"``) validating the plugin's
    #: options from YAML, or its import path (imported only when the YAML
    #: gives options, so that commands that need none stay fast); None if
    #: it takes no options.
    options_model: type[BaseModel] | str | None = None
    #: Filled in by the plugin manager: the distribution that registered it.
    distribution: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", normalize_name(self.name))

    def resolve_options_model(self) -> type[BaseModel] | None:
        """The options model class, importing it if it was given by path."""
        ref = self.options_model
        if isinstance(ref, str):
            model: type[BaseModel] = import_path(ref)
            return model
        return ref

    def resolve_factory(self) -> Callable[[Any, PluginContext], T]:
        """The factory, importing it if it was given by path."""
        ref = self.factory
        if ref is None:
            raise TypeError(f"{self.name!r} has no factory")
        if isinstance(ref, str):
            factory: Callable[[Any, PluginContext], T] = import_path(ref)
            return factory
        return ref

    def factory_path(self) -> str | None:
        """The factory's import path, if it has one that imports back to it
        (what the CLI's start-up cache may remember)."""
        ref = self.factory
        if isinstance(ref, str):
            return ref
        module = getattr(ref, "__module__", None)
        qualname = getattr(ref, "__qualname__", "")
        if not module or not qualname or "<" in qualname:
            return None
        return f"{module}:{qualname}"


@dataclass(frozen=True)
class BackendSpec(_Record[Storage]):
    """A storage backend: ``factory(options, context)`` returns a Storage."""


@dataclass(frozen=True)
class ExecutorSpec(_Record[Executor]):
    """An executor: ``factory(options, context)`` returns an Executor."""


@dataclass(frozen=True)
class BackoffPolicySpec(_Record[BackoffPolicy]):
    """A retry delay policy: ``factory(options, context)`` returns a
    BackoffPolicy."""
