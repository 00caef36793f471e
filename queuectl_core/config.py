"""Where state lives (QUEUECTL_HOME) and the YAML configuration file.

Precedence, highest first: command-line option, environment variable,
YAML file, built-in default.

``$QUEUECTL_HOME/queuectl.yaml`` (or ``--config PATH`` / ``QUEUECTL_CONFIG``)::

    backend: sqlite              # storage plugin to use
    backends:                    # options per backend, validated by its plugin
      sqlite:
        path: /var/lib/queuectl/queue.db
    executor: shell              # how commands run
    executors:
      shell: {}
    retry:
      policy: exponential        # backoff policy: exponential, linear, constant, or a plugin's
    dlq:
      command: mail -s dead me   # run with each dead job as JSON on stdin
      timeout: 30                # seconds the command may take
    defaults:                    # runtime settings used until `config set` stores one
      max_retries: 5
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .models import check_setting, normalize_setting_key, validation_message

DEFAULT_BACKEND = "sqlite"
DEFAULT_EXECUTOR = "shell"
DEFAULT_POLICY = "exponential"
CONFIG_FILENAME = "queuectl.yaml"


@dataclass(frozen=True)
class RetryConfig:
    policy: str = DEFAULT_POLICY
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DlqConfig:
    command: str | None = None
    timeout: float = 30.0


@dataclass(frozen=True)
class FileConfig:
    """What the YAML file says (validated by ``config_schema``), or the
    defaults when there is no file."""

    backend: str | None = None
    backends: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    executor: str = DEFAULT_EXECUTOR
    executors: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    retry: RetryConfig = field(default_factory=RetryConfig)
    defaults: dict[str, Any] = field(default_factory=dict)
    dlq: DlqConfig = field(default_factory=DlqConfig)
    #: The file's text as read and validated (for the fast path's cache).
    text: str | None = field(default=None, compare=False)


@dataclass(frozen=True)
class AppConfig:
    """Everything resolved before any plugin is loaded."""

    home: Path
    config_path: Path | None
    file: FileConfig
    backend: str

    def backend_options(self, name: str) -> dict[str, Any]:
        return _options_for(self.file.backends, name)

    def executor_options(self, name: str) -> dict[str, Any]:
        return _options_for(self.file.executors, name)


def _options_for(section: dict[str, dict[str, Any] | None], name: str) -> dict[str, Any]:
    wanted = name.lower().replace("_", "-")
    for key, value in section.items():
        if key.lower().replace("_", "-") == wanted:
            return dict(value or {})
    return {}


def default_home() -> Path:
    """The user's data directory: ``$XDG_DATA_HOME/queuectl`` or
    ``~/.local/share/queuectl``."""
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "queuectl"


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` and any missing parents; every directory created here
    is private to the user (0700), whatever the umask."""
    if path.is_dir():
        return path
    if path.exists():
        raise ConfigError(f"{path} exists and is not a directory")
    missing = []
    current = path
    while not current.exists():
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=0o700)
            os.chmod(directory, 0o700)
        except FileExistsError:
            pass
        except OSError as exc:
            raise ConfigError(f"cannot create {directory}: {exc.strerror}") from None
    return path


def resolve_home(option: str | None) -> Path:
    raw = option or os.environ.get("QUEUECTL_HOME")
    home = Path(raw).expanduser() if raw else default_home()
    return ensure_private_dir(home.absolute())


def load_file_config(path: Path) -> FileConfig:
    import yaml  # only when there is a file to read

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not valid UTF-8") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"config file {path} is not valid YAML{where}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: the top level must be a mapping of keys")
    from pydantic import ValidationError  # only when there is a file to check

    from .config_schema import FileSchema

    try:
        cfg = FileSchema.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"config file {path}: {validation_message(exc)}") from None
    # Settings defaults accept max-retries and max_retries alike.
    defaults: dict[str, Any] = {}
    for key, value in cfg.defaults.items():
        try:
            norm = normalize_setting_key(str(key))
            defaults[norm] = check_setting(norm, value)
        except ConfigError as exc:
            raise ConfigError(f"config file {path}: defaults: {exc}") from None
    return FileConfig(
        backend=cfg.backend, backends=cfg.backends, executor=cfg.executor,
        executors=cfg.executors,
        retry=RetryConfig(policy=cfg.retry.policy, options=cfg.retry.options),
        defaults=defaults,
        dlq=DlqConfig(command=cfg.dlq.command, timeout=cfg.dlq.timeout),
        text=text,
    )


def resolve_config(*, home: str | None, config: str | None, backend: str | None) -> AppConfig:
    home_path = resolve_home(home)
    explicit = config or os.environ.get("QUEUECTL_CONFIG")
    if explicit:
        config_path: Path | None = Path(explicit).expanduser().absolute()
        assert config_path is not None
        if not config_path.is_file():
            raise ConfigError(f"config file {config_path} does not exist")
    else:
        candidate = home_path / CONFIG_FILENAME
        config_path = candidate if candidate.is_file() else None
    file_cfg = load_file_config(config_path) if config_path else FileConfig()
    chosen = (backend or os.environ.get("QUEUECTL_BACKEND") or file_cfg.backend
              or DEFAULT_BACKEND)
    return AppConfig(home=home_path, config_path=config_path, file=file_cfg, backend=chosen)
