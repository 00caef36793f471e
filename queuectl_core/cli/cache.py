"""The CLI's start-up cache: ``$QUEUECTL_HOME/cache/startup.json``, what
the full CLI learnt the last time it loaded the plugins (the selected
backend's factory and, if it takes them as a snapshot, its validated
options, the YAML ``defaults``, whether any plugin listens to job events),
and the App seeded with it (see ``startup.py``)."""

from __future__ import annotations

import json
import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ..app import App

CACHE_FILE = "startup.json"


def seeded_app() -> App | None:
    """An App seeded from the cache of the current home, or None."""
    from ..config import AppConfig, config_file_for, home_dir
    from ..errors import ConfigError
    from ..limits import DEFAULT_BACKEND

    home = home_dir(None)
    cache = load(home)
    if cache is None:
        return None
    try:
        config_path = config_file_for(home, None)
    except ConfigError:
        return None  # the full CLI reports it
    text = None
    if config_path is not None:
        try:
            with open(config_path, encoding="utf-8") as fh:
                text = fh.read()
        except (OSError, UnicodeDecodeError):
            return None
    if [config_path, _digest(text)] != cache.get("config"):
        return None
    backend = os.environ.get("QUEUECTL_BACKEND") or cache.get("file_backend") or DEFAULT_BACKEND
    if backend != cache.get("backend") or not isinstance(cache.get("factory"), str):
        return None
    from ..app import App
    from ..registry import BackendSpec, OptionsSnapshot

    options = cache.get("options")
    spec = BackendSpec(name=backend, factory=cache["factory"],
                       distribution=cache.get("distribution"))
    snapshot = OptionsSnapshot(options) if isinstance(options, dict) else None
    config = AppConfig(home=home, config_path=config_path, backend=backend, text=text,
                       defaults=dict(cache.get("defaults") or {}),
                       # The YAML gives this backend no options: no need to read it.
                       backend_options=None if snapshot else {spec.name: {}})
    return App(config, backend=spec, listeners=bool(cache.get("listeners")),
               backend_options=snapshot)


# ------------------------------------------------------------------ the cache

def _digest(text: str | None) -> str | None:
    """What the cache keeps of the config file's text: a digest, never the
    text itself, which may hold a password (a DSN)."""
    if text is None:
        return None
    try:
        from _blake2 import blake2b  # hashlib would cost 3 ms (OpenSSL) on the hot path
    except ImportError:  # pragma: no cover - CPython always has it
        from hashlib import blake2b
    return blake2b(text.encode("utf-8", "surrogatepass"), digest_size=20).hexdigest()


def _snapshot(app: App) -> dict[str, Any] | None:
    """The backend's validated options, by field name, if its factory takes
    a snapshot of them (``snapshot_options``), they are plain JSON and none
    of its secret options (``secret_options``: a DSN) is set: a secret is
    never written to the cache."""
    from ..app import validated_options

    spec = app.plugins.backend(app.config.backend)
    if not spec.snapshot_options:
        return None
    model = validated_options(spec, app.config.backend_options(spec.name),
                              f"backend {spec.name!r}", app.config)
    values: dict[str, Any] = model.model_dump()
    if any(values.get(name) is not None for name in spec.secret_options):
        return None
    if json.loads(json.dumps(values)) != values:
        return None
    return values


def cache_path(home: str) -> str:
    return os.path.join(home, "cache", CACHE_FILE)


def load(home: str) -> dict[str, Any] | None:
    """The cache of ``home`` if it is valid in this environment, else None."""
    try:
        with open(cache_path(home), encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    from ..installed import environment_key

    if not isinstance(data, dict) or data.get("key") != environment_key():
        return None
    return data


def remember(app: App) -> None:
    """Record what the cache holds, after a command of the full CLI loaded
    the plugins with ``app``. Never raises: a cache that cannot be written
    only costs time."""
    import contextlib  # (the full CLI's path: it has loaded far more)

    with contextlib.suppress(Exception):
        _remember(app)


def _remember(app: App) -> None:
    from ..installed import environment_key

    config = app.config
    file = config.file
    spec = app.plugins.backend(config.backend)  # not a record the cache seeded
    factory = spec.factory_path()
    given = bool(config.backend_options(spec.name))
    options = _snapshot(app) if given else None
    if given and options is None:
        factory = None  # options only as their pydantic model: the full CLI
    data = {
        "key": environment_key(),
        "config": [config.config_file,
                   _digest(config.text) if config.config_file is not None else None],
        "file_backend": file.backend if file is not None else None,
        "backend": config.backend,
        "factory": factory,
        "options": options,
        "distribution": spec.distribution,
        "defaults": config.defaults,
        "listeners": app.plugins.has_event_listeners(),
    }
    path = cache_path(config.home_dir)
    encoded = json.dumps(data, ensure_ascii=False, sort_keys=True)
    try:
        with open(path, encoding="utf-8") as fh:
            if fh.read() == encoded:
                return
    except OSError:
        pass
    from ..safefs import write_atomic

    # Following no symbolic link below the home (``cache`` nor the file).
    write_atomic(config.home_dir, [os.path.basename(os.path.dirname(path)),
                                   os.path.basename(path)], encoded)
