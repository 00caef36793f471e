"""Plugin discovery and the typed facade over pluggy's hook relay.

Built once per command that needs it (never at import time). Entry points in
the ``queuectl`` group are loaded one by one: one that fails to import is
reported by name and skipped. ``QUEUECTL_DISABLE_PLUGINS=a,b`` skips entry
points by name.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pluggy

from . import PROJECT_NAME, hookspecs
from .errors import PluginError
from .models import Attempt, Job
from .registry import BackendSpec, BackoffPolicySpec, ExecutorSpec, normalize_name

R = TypeVar("R", BackendSpec, ExecutorSpec, BackoffPolicySpec)


@dataclass(frozen=True)
class PluginFailure:
    """An entry point that could not be loaded."""

    name: str
    distribution: str
    error: str


@dataclass
class LoadedPlugin:
    """An entry point that loaded, and what it registered."""

    name: str
    distribution: str
    version: str
    provides: list[str] = field(default_factory=list)


def _warn(message: str) -> None:
    print(f"queuectl: warning: {message}", file=sys.stderr)


class Plugins:
    """The plugin manager and the records collected from it."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.pm = pm
        self.loaded: list[LoadedPlugin] = []
        self.failures: list[PluginFailure] = []
        self._dist_of: dict[int, str] = {}
        self._cache: dict[str, dict[str, Any]] = {}

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
                err = "".join(traceback.format_exception_only(exc)).strip()
                self.failures.append(PluginFailure(ep.name, dist_name, err))
                _warn(f"plugin {ep.name!r} (from {dist_name} {version}) failed to load "
                      f"and was skipped: {err}")
                continue
            self._dist_of[id(module)] = dist_name
            self.loaded.append(LoadedPlugin(ep.name, dist_name, version))

    def register(self, plugin: object, name: str, distribution: str = "(registered)") -> None:
        """Register an in-process plugin (tests, embedding)."""
        self.pm.register(plugin, name=name)
        self._dist_of[id(plugin)] = distribution
        self.loaded.append(LoadedPlugin(name, distribution, "-"))
        self._cache.clear()

    # ---------------------------------------------------------- records
    def _collect(self, hook_name: str, kind: str, record_type: type[Any]) -> dict[str, Any]:
        if hook_name in self._cache:
            return self._cache[hook_name]
        records: dict[str, Any] = {}
        hook = getattr(self.pm.hook, hook_name)
        for impl in hook.get_hookimpls():
            plugin_name = impl.plugin_name
            dist = self._dist_of.get(id(impl.plugin), plugin_name)
            try:
                result: Iterable[Any] | None = impl.function()
                items = list(result or [])
            except Exception as exc:
                _warn(f"plugin {plugin_name!r} failed in {hook_name} and was skipped: {exc}")
                continue
            for record in items:
                if not isinstance(record, record_type):
                    _warn(f"plugin {plugin_name!r} (from {dist}) returned "
                          f"{type(record).__name__} from {hook_name}, not a "
                          f"{record_type.__name__}; skipped")
                    continue
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

    def collect_all(self) -> None:
        self.backends()
        self.executors()
        self.backoff_policies()

    def _select(self, records: dict[str, R], name: str, kind: str, hint: str) -> R:
        try:
            key = normalize_name(name)
        except ValueError:
            key = name
        if key in records:
            return records[key]
        choices = ", ".join(sorted(records)) or "none installed"
        raise PluginError(f"unknown {kind} {name!r}; choose one of: {choices} "
                          f"(is its plugin installed? {hint})")

    def backend(self, name: str) -> BackendSpec:
        return self._select(self.backends(), name, "backend", "see 'queuectl plugins'")

    def executor(self, name: str) -> ExecutorSpec:
        return self._select(self.executors(), name, "executor", "see 'queuectl plugins'")

    def backoff_policy(self, name: str) -> BackoffPolicySpec:
        return self._select(self.backoff_policies(), name, "backoff policy",
                            "see 'queuectl plugins'")

    # ---------------------------------------------------------- broadcasts
    def _broadcast(self, hook_name: str, **kwargs: Any) -> None:
        hook = getattr(self.pm.hook, hook_name)
        for impl in hook.get_hookimpls():
            args = {k: v for k, v in kwargs.items() if k in impl.argnames}
            try:
                impl.function(**args)
            except Exception as exc:
                _warn(f"plugin {impl.plugin_name!r} failed in {hook_name}: {exc!r}")

    def has_listeners(self) -> bool:
        """Does any plugin implement a broadcast hook?"""
        return bool(self.pm.hook.queuectl_job_event.get_hookimpls()
                    or self.pm.hook.queuectl_job_dead.get_hookimpls())

    def has_event_listeners(self) -> bool:
        """Does any plugin implement ``queuectl_job_event``?"""
        return bool(self.pm.hook.queuectl_job_event.get_hookimpls())

    def job_event(self, event: str, job: Job, attempt: Attempt | None = None) -> None:
        """Tell every plugin about a state change; never raises."""
        self._broadcast("queuectl_job_event", event=event, job=job, attempt=attempt)

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
        cache_dir.mkdir(mode=0o700, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({"key": key, "entry_points": [
                [e.name, e.value, e.distribution, e.version] for e in found]}, fh)
        os.replace(tmp, path)
    except OSError:
        pass  # a cache we cannot write only costs time
    return found
