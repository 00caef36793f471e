"""Plugin discovery and the typed facade over pluggy's hook relay.

Built once per command that needs it (never at import time). Entry points in
the ``queuectl`` group are loaded one by one. A broken plugin never stops the
others: one that fails to import, or whose registration hook raises or returns
something other than its kind of records, is skipped (for a hook: what that
hook returned), kept in :attr:`Plugins.failures` and named on stderr as
``plugin 'NAME' (from DIST VERSION) failed ...``; selecting a record it may
have provided says so (:meth:`Plugins.missing`). ``QUEUECTL_DISABLE_PLUGINS=a,b``
skips entry points by name.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pluggy

from . import PROJECT_NAME, hookspecs
from .errors import PluginError
from .models import Attempt, Job
from .notify import Notifier
from .records import Record
from .registry import (
    BackendSpec,
    BackoffPolicySpec,
    CommandSpec,
    ExecutorSpec,
    NotifierSpec,
    normalize_name,
)

R = TypeVar("R", BackendSpec, ExecutorSpec, BackoffPolicySpec, NotifierSpec)


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that could not be loaded (``hook`` None), or one of whose
    registration hooks raised or returned something other than records
    (``hook``: that hook's name; what it returned is skipped)."""

    name: str
    distribution: str
    error: str
    version: str = "?"
    hook: str | None = None

    @property
    def message(self) -> str:
        """``plugin 'NAME' (from DIST VERSION) failed to load: ERROR``, or
        ``... failed in HOOK: ERROR``."""
        where = "to load" if self.hook is None else f"in {self.hook}"
        origin = _dist_version(self.distribution, self.version)
        return f"plugin {self.name!r} (from {origin}) failed {where}: {self.error}"


@dataclass
class LoadedPlugin:
    """An entry point that loaded, and what it registered."""

    name: str
    distribution: str
    version: str
    provides: list[str] = field(default_factory=list)


def _dist_version(distribution: str, version: str) -> str:
    """``DIST VERSION``, or ``DIST`` for a plugin registered in-process."""
    return distribution if version in ("", "-", "?") else f"{distribution} {version}"


def _key(name: str) -> str:
    """``name`` as records and entry points are compared."""
    try:
        return normalize_name(name)
    except ValueError:
        return name


def _warn(message: str) -> None:
    print(f"queuectl: warning: {message}", file=sys.stderr)


def error_text(exc: BaseException) -> str:
    """``TypeName: message`` on one line (a SyntaxError's too)."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _a(type_name: str) -> str:
    return f"an {type_name}" if type_name[:1].lower() in "aeiou" else f"a {type_name}"


class NotRecords(TypeError):
    """A registration hook returned something other than records."""


def _records(result: Any, record_type: type[Any]) -> list[Any]:
    """What a registration hook returned, as a list of ``record_type``
    records; :class:`NotRecords` saying what it returned otherwise."""
    if result is None:
        return []
    wanted = record_type.__name__
    if isinstance(result, str | bytes | Mapping | Record) or not isinstance(result, Iterable):
        raise NotRecords(f"returned {_a(type(result).__name__)}, not a list of {wanted} records")
    items = list(result)
    for item in items:
        if not isinstance(item, record_type):
            raise NotRecords(f"returned {_a(type(item).__name__)}, not {_a(wanted)}")
    return items


class Plugins:
    """The plugin manager and the records collected from it."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.pm = pm
        self.loaded: list[LoadedPlugin] = []
        self.failures: list[PluginFailure] = []
        #: id(plugin object) -> (distribution, version)
        self._origin: dict[int, tuple[str, str]] = {}
        #: distribution -> version, of the plugins loaded from entry points
        self._versions: dict[str, str] = {}
        self._cache: dict[str, dict[str, Any]] = {}
        #: The notifiers built from the YAML, with how to name them in messages.
        self._notifiers: list[tuple[str, Notifier]] = []

    # ---------------------------------------------------------- discovery
    def load_entry_points(self, cache_dir: Path | None = None) -> None:
        disabled = {
            n.strip() for n in os.environ.get("QUEUECTL_DISABLE_PLUGINS", "").split(",")
            if n.strip()
        }
        seen: set[tuple[str, str]] = set()
        for ep in discover(cache_dir):
            if (ep.name, ep.value) in seen or ep.name in disabled:
                continue
            seen.add((ep.name, ep.value))
            dist_name, version = ep.distribution, ep.version
            try:
                module = ep.load()
                self.pm.register(module, name=ep.name)
                try:
                    # A misspelled queuectl_* hook is this plugin's error only.
                    self.pm.check_pending()
                except Exception:
                    self.pm.unregister(module)
                    raise
            except Exception as exc:  # a broken third-party plugin must not stop us
                self._failed(PluginFailure(ep.name, dist_name, error_text(exc), version))
                continue
            self._origin[id(module)] = (dist_name, version)
            self._versions[dist_name] = version
            self.loaded.append(LoadedPlugin(ep.name, dist_name, version))

    def register(self, plugin: object, name: str, distribution: str = "(registered)") -> None:
        """Register an in-process plugin (tests, embedding)."""
        self.pm.register(plugin, name=name)
        self._origin[id(plugin)] = (distribution, "-")
        self.loaded.append(LoadedPlugin(name, distribution, "-"))
        self._cache.clear()

    def _failed(self, failure: PluginFailure) -> None:
        self.failures.append(failure)
        _warn(f"{failure.message}; skipped")

    def failures_of(self, name: str) -> list[PluginFailure]:
        """What went wrong with the plugin of entry-point ``name``."""
        return [f for f in self.failures if f.name == name]

    def origin(self, record: BackendSpec | ExecutorSpec | BackoffPolicySpec | NotifierSpec) -> str:
        """``DIST VERSION`` of the plugin that registered ``record``."""
        dist = record.distribution or "a plugin"
        return _dist_version(dist, self._versions.get(dist, ""))

    # ---------------------------------------------------------- records
    def _collect(self, hook_name: str, kind: str, record_type: type[Any]) -> dict[str, Any]:
        if hook_name in self._cache:
            return self._cache[hook_name]
        records: dict[str, Any] = {}
        hook = getattr(self.pm.hook, hook_name)
        for impl in hook.get_hookimpls():
            plugin_name = impl.plugin_name
            dist, version = self._origin.get(id(impl.plugin), (plugin_name, "?"))
            try:
                items = _records(impl.function(), record_type)
            except Exception as exc:  # the hook raised, or returned no records
                error = str(exc) if isinstance(exc, NotRecords) else error_text(exc)
                self._failed(PluginFailure(plugin_name, dist, error, version, hook_name))
                continue
            for record in items:
                record = record.replace(distribution=dist)
                other = records.get(record.name)
                if other is not None:
                    raise PluginError(
                        f"two plugins register the {kind} {record.name!r}: "
                        f"{other.distribution} and {dist}; uninstall one or disable it with "
                        "QUEUECTL_DISABLE_PLUGINS"
                    )
                records[record.name] = record
                for loaded in self.loaded:
                    if loaded.name == plugin_name:
                        loaded.provides.append(f"{kind} {record.name}")
        self._cache[hook_name] = records
        return records

    def backends(self) -> dict[str, BackendSpec]:
        return self._collect("queuectl_storage_backends", "backend", BackendSpec)

    def executors(self) -> dict[str, ExecutorSpec]:
        return self._collect("queuectl_executors", "executor", ExecutorSpec)

    def backoff_policies(self) -> dict[str, BackoffPolicySpec]:
        return self._collect("queuectl_backoff_policies", "backoff policy", BackoffPolicySpec)

    def notifiers(self) -> dict[str, NotifierSpec]:
        return self._collect("queuectl_notifiers", "notifier", NotifierSpec)

    def commands(self) -> dict[str, CommandSpec]:
        return self._collect("queuectl_cli_commands", "command", CommandSpec)

    def collect_all(self) -> None:
        self.backends()
        self.executors()
        self.backoff_policies()
        self.notifiers()
        self.commands()

    def secret_env(self) -> frozenset[str]:
        """Every environment variable a plugin's record declares secret
        (``secret_env``), whatever its kind and whether selected or not."""
        self.collect_all()
        return frozenset(name for records in self._cache.values()
                         for record in records.values() for name in record.secret_env)

    def _select(self, records: dict[str, R], name: str, kind: str, hook: str) -> R:
        key = _key(name)
        if key in records:
            return records[key]
        raise PluginError(self.missing(records, name, kind, hook))

    def missing(self, records: dict[str, Any], name: str, kind: str, hook: str, *,
                hint: bool = True) -> str:
        """Why no record of ``kind`` is called ``name``. A plugin that failed
        to load, or in ``hook``, may have provided it: if its entry point
        has that name, the record is unavailable because of it; else all
        such failures are named. Without any, the name is unknown."""
        key = _key(name)
        failed = [f for f in self.failures if f.hook in (None, hook)]
        own = [f for f in failed if _key(f.name) == key]
        if own:
            return f"{kind} {name!r} is unavailable: " + "; ".join(f.message for f in own)
        choices = ", ".join(sorted(records)) or "none installed"
        if failed:
            kinds = "backoff policies" if kind == "backoff policy" else f"{kind}s"
            return (f"{kind} {name!r} is not installed or its plugin failed: "
                    + "; ".join(f.message for f in failed)
                    + f" (installed {kinds}: {choices}; see 'queuectl plugins')")
        return (f"unknown {kind} {name!r}; choose one of: {choices}"
                + (" (is its plugin installed? see 'queuectl plugins')" if hint else ""))

    def backend(self, name: str) -> BackendSpec:
        return self._select(self.backends(), name, "backend", "queuectl_storage_backends")

    def executor(self, name: str) -> ExecutorSpec:
        return self._select(self.executors(), name, "executor", "queuectl_executors")

    def backoff_policy(self, name: str) -> BackoffPolicySpec:
        return self._select(self.backoff_policies(), name, "backoff policy",
                            "queuectl_backoff_policies")

    def notifier(self, name: str) -> NotifierSpec:
        return self._select(self.notifiers(), name, "notifier", "queuectl_notifiers")

    def add_notifier(self, spec: NotifierSpec, notifier: Notifier) -> None:
        """Tell ``notifier`` (built from ``spec``) of the events it wants."""
        self._notifiers.append((f"notifier {spec.name!r} (from {self.origin(spec)})", notifier))

    def running_notifiers(self) -> list[Notifier]:
        """The notifiers built from the YAML, in its order."""
        return [notifier for _, notifier in self._notifiers]

    def close_notifiers(self) -> None:
        """Let every notifier flush and finish (the process is exiting)."""
        notifiers, self._notifiers = self._notifiers, []
        for label, notifier in notifiers:
            try:
                notifier.close()
            except Exception as exc:
                _warn(f"{label} failed to close: {error_text(exc)}")

    # ---------------------------------------------------------- broadcasts
    def _broadcast(self, hook_name: str, **kwargs: Any) -> None:
        hook = getattr(self.pm.hook, hook_name)
        for impl in hook.get_hookimpls():
            args = {k: v for k, v in kwargs.items() if k in impl.argnames}
            try:
                impl.function(**args)
            except Exception as exc:
                dist, version = self._origin.get(id(impl.plugin), (impl.plugin_name, "?"))
                origin = _dist_version(dist, version)
                _warn(f"plugin {impl.plugin_name!r} (from {origin}) failed in {hook_name}: "
                      f"{error_text(exc)}")

    def has_listeners(self) -> bool:
        """Does any plugin implement a broadcast hook, or any notifier run?"""
        return bool(self.pm.hook.queuectl_job_event.get_hookimpls()
                    or self.pm.hook.queuectl_job_dead.get_hookimpls() or self._notifiers)

    def has_event_listeners(self) -> bool:
        """Does any plugin implement ``queuectl_job_event``, or any notifier
        want events other than ``dead`` (which a DLQ handler alone gets
        after the move is stored, whatever the worker does next)?"""
        return bool(self.pm.hook.queuectl_job_event.get_hookimpls()
                    or any(n.events - {"dead"} for _, n in self._notifiers))

    def job_event(self, event: str, job: Job, attempt: Attempt | None = None) -> None:
        """Tell every plugin and notifier about a state change; never raises."""
        self._broadcast("queuectl_job_event", event=event, job=job, attempt=attempt)
        for label, notifier in self._notifiers:
            if event in notifier.events:
                try:
                    notifier.on_event(event, job, attempt)
                except Exception as exc:
                    _warn(f"{label} failed on event {event!r} of job {job.id!r}: "
                          f"{error_text(exc)}")

    def job_dead(self, job: Job, attempt: Attempt | None = None) -> None:
        """Tell every DLQ handler that a job is dead; never raises."""
        self._broadcast("queuectl_job_dead", job=job, attempt=attempt)


def build_plugins(*, entry_points: bool = True, cache_dir: Path | None = None) -> Plugins:
    """A fresh plugin manager with the hookspecs added and, unless told not
    to, every installed entry point of the ``queuectl`` group loaded (the
    list of entry points cached under ``cache_dir`` if given)."""
    pm = pluggy.PluginManager(PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    plugins = Plugins(pm)
    if entry_points:
        plugins.load_entry_points(cache_dir)
    return plugins


# ---------------------------------------------------------------- discovery

@dataclass(frozen=True)
class EntryPoint:
    """An entry point of the ``queuectl`` group and the distribution that
    declares it."""

    name: str
    value: str
    distribution: str
    version: str

    def load(self) -> Any:
        """Import ``module`` or ``module:attr.path``, as importlib.metadata does."""
        import importlib

        module_name, _, attrs = self.value.partition(":")
        obj: Any = importlib.import_module(module_name.strip())
        for attr in filter(None, attrs.strip().split(".")):
            obj = getattr(obj, attr)
        return obj


CACHE_FILE = "plugins.json"


def _cache_key() -> list[Any]:
    """When to scan again: see :func:`queuectl_core.installed.environment_key`."""
    from .installed import environment_key

    return environment_key()


def _scan() -> list[EntryPoint]:
    from importlib import metadata

    found = []
    for ep in metadata.entry_points(group=PROJECT_NAME):
        dist = ep.dist
        found.append(EntryPoint(
            ep.name, ep.value,
            dist.metadata["Name"] if dist is not None else "?",
            dist.version if dist is not None else "?",
        ))
    return found


def discover(cache_dir: Path | None = None) -> list[EntryPoint]:
    """The installed entry points of the ``queuectl`` group. With
    ``cache_dir`` the scan (tens of ms: importlib.metadata reads every
    distribution's metadata) is done only when sys.path changed."""
    if cache_dir is None:
        return _scan()
    import json

    path = cache_dir / CACHE_FILE
    key = _cache_key()
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
        if cached["key"] == key:
            return [EntryPoint(*e) for e in cached["entry_points"]]
    except (OSError, ValueError, KeyError, TypeError):
        pass  # missing or unreadable: scan again and rewrite it
    found = _scan()
    try:
        from .safefs import write_atomic

        # No symbolic link followed below the home (``cache`` nor the file).
        write_atomic(cache_dir.parent, [cache_dir.name, CACHE_FILE], json.dumps(
            {"key": key, "entry_points": [
                [e.name, e.value, e.distribution, e.version] for e in found]}))
    except OSError:
        pass  # a cache we cannot write only costs time
    return found
