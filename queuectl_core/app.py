"""The resolved application: configuration, plugins, and the store, ledger,
executor and backoff policy they select. Everything is built lazily, so a
command pays only for what it uses.

The CLI's start-up cache (``cli/startup.py``) may seed an App with what it
already knows (the backend's record and validated options, whether plugins
listen to job events),
so that ``enqueue`` and ``status`` run the same command code without
loading pluggy; anything else an App is asked for is built as usual."""

from __future__ import annotations

from functools import cached_property

from .config import AppConfig
from .errors import ConfigError, PluginError, QueuectlError
from .ledger import Ledger
from .registry import PluginContext, normalize_name
from .settings import Settings, settings_from_stored

# typing is not imported at run time (the CLI's hot path).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .config_file import ConfigFile
    from .executor import Executor
    from .plugins import Plugins
    from .registry import (
        BackendSpec,
        BackoffPolicySpec,
        ExecutorSpec,
        NotifierSpec,
        OptionsSnapshot,
    )
    from .retry import BackoffPolicy
    from .storage import Storage


def validated_options(spec: BackendSpec | ExecutorSpec | BackoffPolicySpec | NotifierSpec,
                      raw: dict[str, Any], what: str, config: AppConfig) -> Any:
    """Validated options for a plugin record, or None when the YAML gives
    none (the factory then uses its defaults)."""
    if not raw:
        return None
    where = f"config file {config.config_path}: " if config.config_path else ""
    model = spec.resolve_options_model()
    if model is None:
        raise ConfigError(f"{where}{what} takes no options, got: {', '.join(sorted(raw))}")
    from pydantic import ValidationError

    from .models import validation_message

    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{where}options of {what}: {validation_message(exc)}") from None


def _built(spec: Any, what: str, options: Any, context: PluginContext,
           failed: str = "failed to start") -> Any:
    """Call a record's factory; a failure names the plugin."""
    try:
        return spec.resolve_factory()(options, context)
    except QueuectlError:
        raise
    except Exception as exc:
        raise PluginError(f"{what} (from {spec.distribution or 'a plugin'}) {failed}: "
                          f"{exc}") from exc


def check_plugin_sections(file: ConfigFile, plugins: Plugins, config: AppConfig) -> None:
    """The whole YAML file against the installed plugins, whatever the
    command: every section of ``backends`` and ``executors`` names an
    installed plugin and its options pass that plugin's model, selected or
    not; the executor and the retry policy exist and their options pass.
    (Notifiers are checked as they are built.)"""
    where = f"config file {config.config_path}: "
    for section, records in (("backends", plugins.backends()),
                             ("executors", plugins.executors())):
        kind = section[:-1]
        for key, raw in getattr(file, section).items():
            try:
                spec = records[normalize_name(key)]
            except (KeyError, ValueError):
                choices = ", ".join(sorted(records)) or "none installed"
                raise ConfigError(f"{where}{section}.{key}: no {kind} {key!r} is installed "
                                  f"(installed: {choices}; see 'queuectl plugins')") from None
            validated_options(spec, dict(raw or {}), f"{kind} {spec.name!r}", config)
    executor = plugins.executor(file.executor)
    validated_options(executor, config.executor_options(executor.name),
                      f"executor {executor.name!r}", config)
    policy = plugins.backoff_policy(file.retry.policy)
    validated_options(policy, dict(file.retry.options), f"backoff policy {policy.name!r}", config)


class App:
    def __init__(self, config: AppConfig, plugins: Plugins | None = None, *,
                 backend: BackendSpec | None = None, listeners: bool | None = None,
                 backend_options: OptionsSnapshot | None = None) -> None:
        self.config = config
        self._listeners = listeners
        self._backend_options = backend_options
        if plugins is not None:
            self.__dict__["plugins"] = plugins
        if backend is not None:
            self.__dict__["backend"] = backend

    @property
    def context(self) -> PluginContext:
        return PluginContext(self.config.home_dir, backend=self.config.backend)

    def context_for(self, spec: Any) -> PluginContext:
        """The context a record's factory gets."""
        return self.context.for_plugin(spec.name)

    @cached_property
    def plugins(self) -> Plugins:
        from .plugins import build_plugins

        plugins = build_plugins(cache_dir=self.config.home / "cache")
        file = self.config.file
        if file is not None:
            check_plugin_sections(file, plugins, self.config)
        for name, raw in (file.notifier_options() if file is not None else {}).items():
            spec = plugins.notifier(name)
            what = f"notifier {spec.name!r}"
            options = validated_options(spec, raw, what, self.config)
            plugins.add_notifier(spec, _built(spec, what, options, self.context_for(spec)))
        return plugins

    @cached_property
    def backend(self) -> BackendSpec:
        """The selected backend's record."""
        return self.plugins.backend(self.config.backend)

    def has_event_listeners(self) -> bool:
        """Does any plugin listen to ``queuectl_job_event``?"""
        if self._listeners is not None and "plugins" not in self.__dict__:
            return self._listeners
        return self.plugins.has_event_listeners()

    def open_store(self) -> Storage:
        """A new store of the selected backend."""
        spec = self.backend
        what = f"backend {spec.name!r}"
        options = self._backend_options
        if options is None:
            options = validated_options(spec, self.config.backend_options(spec.name), what,
                                        self.config)
        store: Storage = _built(spec, what, options, self.context_for(spec), "failed to open")
        return store

    @cached_property
    def ledger(self) -> Ledger:
        """The queue's operations over the selected store."""
        return Ledger(self.open_store())

    def settings(self, ledger: Ledger | None = None) -> Settings:
        """Effective runtime settings: stored > YAML defaults > built-in."""
        source = ledger or self.ledger
        return settings_from_stored(source.get_settings(), self.config.defaults)

    def executor(self) -> Executor:
        spec = self.plugins.executor(self.config.executor_name())
        what = f"executor {spec.name!r}"
        options = validated_options(spec, self.config.executor_options(spec.name), what,
                                    self.config)
        executor: Executor = _built(spec, what, options, self.context_for(spec))
        executor.hidden_env = self.plugins.secret_env()
        return executor

    def backoff_policy(self, name: str | None = None) -> BackoffPolicy:
        """The configured backoff policy, or the one called ``name`` (a job's
        own choice; it gets the YAML options only if it is the configured
        one)."""
        spec, configured = self._policy_spec(name)
        file = self.config.file
        raw = file.retry.options if file is not None and spec.name == configured else {}
        what = f"backoff policy {spec.name!r}"
        options = validated_options(spec, raw, what, self.config)
        policy: BackoffPolicy = _built(spec, what, options, self.context_for(spec))
        return policy

    def _policy_spec(self, name: str | None) -> tuple[BackoffPolicySpec, str]:
        """The record of the policy called ``name`` (None: the configured
        one), and the configured one's name."""
        from .limits import DEFAULT_POLICY

        file = self.config.file
        configured = file.retry.policy if file is not None else DEFAULT_POLICY
        return self.plugins.backoff_policy(name or configured), configured

    def backoff_policy_label(self, name: str | None = None) -> str:
        """``retry policy 'NAME' (from DIST VERSION)``: the configured policy,
        or the one called ``name``, for messages."""
        spec, _ = self._policy_spec(name)
        return f"retry policy {spec.name!r} (from {self.plugins.origin(spec)})"

    def close(self) -> None:
        if "ledger" in self.__dict__:
            self.__dict__.pop("ledger").close()
        if "plugins" in self.__dict__:
            # A notifier still running (the DLQ command) gets to finish, or
            # has its timeout enforced, before this process exits.
            self.plugins.close_notifiers()
