"""The resolved application: configuration, plugins, and the storage,
executor and backoff policy they select. Everything is built lazily, so a
command pays only for what it uses."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

from .config import AppConfig
from .errors import ConfigError, PluginError, QueuectlError
from .executor import Executor
from .models import Settings, settings_from_stored, validation_message
from .plugins import Plugins, build_plugins
from .registry import (
    BackendSpec,
    BackoffPolicy,
    BackoffPolicySpec,
    ExecutorSpec,
    PluginContext,
)
from .storage import Storage

if TYPE_CHECKING:
    from .dlq_handler import DlqCommandHandler


def validated_options(spec: BackendSpec | ExecutorSpec | BackoffPolicySpec,
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

    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{where}options of {what}: {validation_message(exc)}") from None


class App:
    def __init__(self, config: AppConfig, plugins: Plugins | None = None) -> None:
        self.config = config
        self._dlq_handler: DlqCommandHandler | None = None
        if plugins is not None:
            self.__dict__["plugins"] = plugins

    @property
    def context(self) -> PluginContext:
        return PluginContext(home=self.config.home)

    @cached_property
    def plugins(self) -> Plugins:
        plugins = build_plugins(cache_dir=self.config.home / "cache")
        dlq = self.config.file.dlq
        if dlq.command:
            from .dlq_handler import DlqCommandHandler

            self._dlq_handler = DlqCommandHandler(
                dlq.command, timeout=dlq.timeout,
                log_path=self.config.home / "logs" / "dlq-handler.log")
            plugins.register(self._dlq_handler, name="dlq-command",
                             distribution="queuectl (dlq.command in the config file)")
        return plugins

    def open_storage(self) -> Storage:
        """A new storage instance of the selected backend."""
        spec = self.plugins.backend(self.config.backend)
        what = f"backend {spec.name!r}"
        options = validated_options(spec, self.config.backend_options(spec.name), what,
                           self.config)
        assert spec.factory is not None, f"{what} has no factory"
        try:
            return spec.factory(options, self.context)
        except QueuectlError:
            raise
        except Exception as exc:
            raise PluginError(f"{what} (from {spec.distribution}) failed to open: {exc}") from exc

    @cached_property
    def storage(self) -> Storage:
        return self.open_storage()

    def settings(self, storage: Storage | None = None) -> Settings:
        """Effective runtime settings: stored > YAML defaults > built-in."""
        store = storage or self.storage
        return settings_from_stored(store.get_settings(), self.config.file.defaults)

    def executor(self) -> Executor:
        name = self.config.file.executor
        spec = self.plugins.executor(name)
        what = f"executor {spec.name!r}"
        options = validated_options(spec, self.config.executor_options(spec.name), what,
                           self.config)
        assert spec.factory is not None, f"{what} has no factory"
        return spec.factory(options, self.context)

    def backoff_policy(self, name: str | None = None) -> BackoffPolicy:
        """The configured backoff policy, or the one called ``name`` (a job's
        own choice; it gets the YAML options only if it is the configured
        one)."""
        retry = self.config.file.retry
        spec = self.plugins.backoff_policy(name or retry.policy)
        raw = retry.options if spec.name == retry.policy else {}
        options = validated_options(spec, raw, f"backoff policy {spec.name!r}", self.config)
        assert spec.factory is not None
        return spec.factory(options)

    def close(self) -> None:
        if "storage" in self.__dict__:
            self.__dict__.pop("storage").close()
        handler = self._dlq_handler
        if handler is not None:
            # A DLQ handler still running gets its timeout enforced (and its
            # end logged) before this process exits.
            handler.join(handler.timeout + 1)
