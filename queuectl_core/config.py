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

The file is validated by one pydantic model, ``config_file.ConfigFile``,
which is the configuration object (``AppConfig.file``); it is read only
when there is a file, and pydantic is imported only then.
"""

from __future__ import annotations

import os
from functools import cached_property

from .errors import ConfigError, QueuectlError
from .limits import DEFAULT_BACKEND

# typing is not imported at run time (the CLI's hot path).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

    from .config_file import ConfigFile

CONFIG_FILENAME = "queuectl.yaml"


class AppConfig:
    """Everything resolved before any plugin is loaded.

    ``file`` (the YAML file's model, or None without a file) is read on
    first use; the CLI's start-up cache may hand over what it already knows
    of it (``defaults``, the selected backend's options) so that a command
    that needs no more never reads it."""

    def __init__(self, *, home: str | os.PathLike[str],
                 config_path: str | os.PathLike[str] | None, backend: str,
                 file: ConfigFile | None = None, text: str | None = None,
                 defaults: dict[str, Any] | None = None,
                 backend_options: dict[str, dict[str, Any]] | None = None) -> None:
        #: QUEUECTL_HOME and the config file as text (the CLI's hot path
        #: never needs pathlib); ``home`` and ``config_path`` as Paths.
        self.home_dir = os.fspath(home)
        self.config_file = None if config_path is None else os.fspath(config_path)
        self.backend = backend
        if file is not None or config_path is None:
            self.__dict__["file"] = file
        #: The file's text as read and validated (what the start-up cache keys on).
        self.text = text
        self._defaults = defaults
        self._backend_options = backend_options or {}

    @cached_property
    def home(self) -> Path:
        from pathlib import Path

        return Path(self.home_dir)

    @cached_property
    def config_path(self) -> Path | None:
        from pathlib import Path

        return None if self.config_file is None else Path(self.config_file)

    @cached_property
    def file(self) -> ConfigFile | None:
        if self.config_path is None:
            return None
        self.text, model = load_file(self.config_path)
        return model

    @property
    def defaults(self) -> dict[str, Any]:
        """The YAML ``defaults`` of the runtime settings (checked)."""
        if self._defaults is not None:
            return self._defaults
        return dict(self.file.defaults) if self.file is not None else {}

    def backend_options(self, name: str) -> dict[str, Any]:
        if name in self._backend_options:  # known (the start-up cache)
            return dict(self._backend_options[name])
        return _options_for(self.file.backends if self.file else {}, name)

    def executor_options(self, name: str) -> dict[str, Any]:
        return _options_for(self.file.executors if self.file else {}, name)

    def executor_name(self) -> str:
        """The selected executor (``executor:`` in YAML, default ``shell``)."""
        from .limits import DEFAULT_EXECUTOR

        return self.file.executor if self.file is not None else DEFAULT_EXECUTOR


def _options_for(section: dict[str, dict[str, Any] | None], name: str) -> dict[str, Any]:
    wanted = name.lower().replace("_", "-")
    for key, value in section.items():
        if key.lower().replace("_", "-") == wanted:
            return dict(value or {})
    return {}


def clean_path(path: str) -> str:
    """``path`` as pathlib would print it: no empty or ``.`` parts, no
    trailing slash, ``..`` kept, and two leading slashes (but not three)
    kept, as POSIX allows."""
    if path.startswith("//") and not path.startswith("///"):
        root = "//"
    else:
        root = "/" if path.startswith("/") else ""
    parts = [part for part in path.split("/") if part and part != "."]
    return (root + "/".join(parts)) or "."


def absolute_path(path: str) -> str:
    """``Path(path).expanduser().absolute()``, as text."""
    path = os.path.expanduser(path)
    if not os.path.isabs(path):
        path = os.path.join(os.getcwd(), path)
    return clean_path(path)


def default_home() -> str:
    """The user's data directory: ``$XDG_DATA_HOME/queuectl`` or
    ``~/.local/share/queuectl``."""
    xdg = os.environ.get("XDG_DATA_HOME")
    base = xdg if xdg else os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "queuectl")


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
        except OSError as exc:  # operational, like any store that cannot be written
            raise QueuectlError(f"cannot create {directory}: {exc.strerror}") from None
    return path


def home_dir(option: str | None) -> str:
    """QUEUECTL_HOME: ``--home``, else the environment, else the default."""
    raw = option or os.environ.get("QUEUECTL_HOME")
    return absolute_path(raw if raw else default_home())


def resolve_home(option: str | None) -> Path:
    """QUEUECTL_HOME, created (private) if it does not exist yet."""
    from pathlib import Path

    return ensure_private_dir(Path(home_dir(option)))


def load_file(path: Path) -> tuple[str, ConfigFile]:
    """Read and validate a YAML config file: its text and its model."""
    import yaml  # only when there is a file to read

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not valid UTF-8") from None
    try:
        data = yaml.load(text, Loader=_unique_keys_loader(yaml))  # a SafeLoader
    except _DuplicateKey as exc:
        raise ConfigError(f"config file {path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"config file {path} is not valid YAML{where}") from None
    if data is None:
        # Empty (or only comments): most likely a file that lost its content,
        # and running on the defaults would be another queue (SQLite here).
        raise ConfigError(f"config file {path} is empty: give its settings, or remove it to "
                          "use the defaults")
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: the top level must be a mapping of keys")
    from pydantic import ValidationError

    from .config_file import ConfigFile
    from .models import validation_message

    try:
        return text, ConfigFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"config file {path}: {validation_message(exc)}") from None


class _DuplicateKey(Exception):
    pass


def _unique_keys_loader(yaml: Any) -> Any:
    """yaml.SafeLoader, but a key given twice in one mapping is an error
    (PyYAML keeps the last one silently)."""

    class UniqueKeys(yaml.SafeLoader):  # type: ignore[misc]
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: set[object] = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                if not isinstance(key, str | int | float | bool):
                    continue  # unhashable keys: the model rejects them anyway
                if key in seen:
                    line = key_node.start_mark.line + 1
                    raise _DuplicateKey(f"{key} is given twice (line {line})")
                seen.add(key)
            return super().construct_mapping(node, deep)

    return UniqueKeys


def config_file_for(home: str, option: str | None) -> str | None:
    """The config file: ``--config``, else QUEUECTL_CONFIG, else
    ``$QUEUECTL_HOME/queuectl.yaml`` if it exists."""
    explicit = option or os.environ.get("QUEUECTL_CONFIG")
    if explicit:
        path = absolute_path(explicit)
        if os.path.isdir(path):
            raise ConfigError(f"config file {path} is a directory: give the YAML file itself "
                              f"(e.g. {os.path.join(path, CONFIG_FILENAME)})")
        if not os.path.isfile(path):
            raise ConfigError(f"config file {path} does not exist")
        return path
    candidate = os.path.join(home, CONFIG_FILENAME)
    return candidate if os.path.isfile(candidate) else None


def resolve_config(*, home: str | None, config: str | None, backend: str | None) -> AppConfig:
    if backend is not None and not backend.strip():
        raise ConfigError("--backend: give a backend's name (e.g. sqlite), not an empty string")
    home_path = resolve_home(home)
    config_path = config_file_for(str(home_path), config)
    resolved = AppConfig(home=home_path, config_path=config_path, backend="")
    file_backend = resolved.file.backend if resolved.file is not None else None
    resolved.backend = (backend or os.environ.get("QUEUECTL_BACKEND") or file_backend
                        or DEFAULT_BACKEND)
    return resolved
