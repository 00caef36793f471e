"""Typed registration records that plugins return from the registration
hooks. The core selects records by name, never by hook order.

Every kind of plugin has one shape: a record naming it, an options model
(pydantic, validating its YAML options) and ``factory(options, context)``.
Both the model and the factory may be given as an import path
(``"package.module:name"``), so that listing plugins imports neither.
"""

from __future__ import annotations

import os

from .records import Record

# typing is not imported at run time (the CLI's hot path builds a record).
TYPE_CHECKING = False
if TYPE_CHECKING:
    import logging
    from collections.abc import Callable
    from pathlib import Path
    from typing import Any

    import click
    from pydantic import BaseModel

    from .executor import Executor
    from .notify import Notifier
    from .retry import BackoffPolicy
    from .storage import Storage

_NAME_FIRST = frozenset("abcdefghijklmnopqrstuvwxyz")
_NAME_CHARS = _NAME_FIRST | frozenset("0123456789_-")


def normalize_name(name: str) -> str:
    """Names are lower case; ``-`` and ``_`` are the same. A name is a
    letter, then up to 62 letters, digits, ``-`` or ``_``."""
    norm = name.strip().lower().replace("_", "-")
    if not (0 < len(norm) <= 63 and norm[0] in _NAME_FIRST and set(norm) <= _NAME_CHARS):
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


class PluginContext:
    """What a factory gets besides its options: ``home``, QUEUECTL_HOME
    (``--home``), where a plugin keeps any local state (files, sockets), as
    a Path, and the same as text in ``home_dir`` (which needs no pathlib);
    ``backend``, the name of the selected storage backend; ``plugin``, the
    name of the record being built; and ``log``, a logger of its own
    (``queuectl.plugins.NAME``: in a worker, its lines go to the workers'
    log)."""

    __slots__ = ("backend", "home_dir", "plugin")

    def __init__(self, home: str | os.PathLike[str], *, backend: str | None = None,
                 plugin: str | None = None) -> None:
        self.home_dir = os.fspath(home)
        self.backend = backend
        self.plugin = plugin

    @property
    def home(self) -> Path:
        from pathlib import Path

        return Path(self.home_dir)

    @property
    def log(self) -> logging.Logger:
        import logging

        return logging.getLogger(f"queuectl.plugins.{self.plugin or 'unnamed'}")

    def for_plugin(self, name: str) -> PluginContext:
        """The same context, for the record called ``name``."""
        return PluginContext(self.home_dir, backend=self.backend, plugin=name)

    def __repr__(self) -> str:
        return (f"PluginContext(home={self.home_dir!r}, backend={self.backend!r}, "
                f"plugin={self.plugin!r})")


class OptionsSnapshot:
    """A plugin's validated options as the start-up cache replays them: the
    model's fields by name, read-only (see ``_Spec.snapshot_options``)."""

    __slots__ = ("_values",)

    def __init__(self, values: dict[str, Any]) -> None:
        object.__setattr__(self, "_values", dict(values))

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"options have no field {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("options are read-only")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OptionsSnapshot) and self._values == other._values

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"OptionsSnapshot({self._values!r})"


class _Spec(Record):
    name: str
    #: ``factory(options, context)`` builds the plugin's object; ``options``
    #: is an instance of ``options_model``, or None when the YAML gives no
    #: options for it (use defaults). A callable, or its import path.
    factory: Callable[[Any, PluginContext], Any] | str | None = None
    description: str = ""
    #: A pydantic model (use ``extra="forbid"``) validating the plugin's
    #: options from YAML, or its import path (imported only when the YAML
    #: gives options, so that commands that need none stay fast); None if
    #: it takes no options.
    options_model: type[BaseModel] | str | None = None
    #: True if the factory only reads its options' fields as attributes
    #: (``options.path``): then the CLI's start-up cache may hand it an
    #: :class:`OptionsSnapshot` of the validated options (the same names and
    #: values) instead of the model, sparing ``enqueue`` and ``status`` the
    #: import of pydantic (~80 ms) when the YAML gives options.
    snapshot_options: bool = False
    #: Environment variables holding secrets this plugin reads (a DSN with
    #: its password, a token): the core keeps them out of every job's
    #: environment (``Executor.hidden_env``).
    secret_env: tuple[str, ...] = ()
    #: Option fields holding secrets (``"dsn"``): never written to a cache;
    #: a backend given one in the YAML is not served by the start-up cache.
    secret_options: tuple[str, ...] = ()
    #: Filled in by the plugin manager: the distribution that registered it.
    distribution: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", normalize_name(self.name))

    def resolve_options_model(self) -> type[BaseModel] | None:
        """The options model class, importing it if it was given by path."""
        ref = self.options_model
        if isinstance(ref, str):
            model: type[BaseModel] = import_path(ref)
            return model
        return ref

    def resolve_factory(self) -> Callable[[Any, PluginContext], Any]:
        """The factory, importing it if it was given by path."""
        ref = self.factory
        if ref is None:
            raise TypeError(f"{self.name!r} has no factory")
        if isinstance(ref, str):
            factory: Callable[[Any, PluginContext], Any] = import_path(ref)
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


class BackendSpec(_Spec):
    """A storage backend: ``factory(options, context)`` returns a Storage."""

    factory: Callable[[Any, PluginContext], Storage] | str | None = None


class ExecutorSpec(_Spec):
    """An executor: ``factory(options, context)`` returns an Executor."""

    factory: Callable[[Any, PluginContext], Executor] | str | None = None


class BackoffPolicySpec(_Spec):
    """A retry delay policy: ``factory(options, context)`` returns a
    BackoffPolicy."""

    factory: Callable[[Any, PluginContext], BackoffPolicy] | str | None = None


class NotifierSpec(_Spec):
    """A notifier (alerts, metrics, audit): ``factory(options, context)``
    returns a :class:`~queuectl_core.notify.Notifier`. Every notifier named
    under ``notifiers:`` in YAML is built, with its options, in each process
    that changes jobs (workers and the CLI), and told of the events it wants."""

    factory: Callable[[Any, PluginContext], Notifier] | str | None = None


class CommandSpec(_Spec):
    """A command of the ``queuectl`` command line (``queuectl NAME``):
    ``factory(options, context)`` returns a ``click.Command`` (``options``
    is always None: a command takes its own options on the command line).
    Give the factory as an import path, so that listing plugins imports
    neither the command nor what it needs. A name of a core command is
    never a plugin's: the core's is run."""

    factory: Callable[[Any, PluginContext], click.Command] | str | None = None


def __getattr__(name: str) -> object:
    if name == "BackoffPolicy":  # its home is retry.py, away from the CLI's hot path
        from .retry import BackoffPolicy

        return BackoffPolicy
    raise AttributeError(name)
