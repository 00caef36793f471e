"""The entry point (``redis = "queuectl_redis.plugin"``): the backend's
record. Its factory and options model are given by path, so that listing
plugins imports neither redis-py nor pydantic."""

from __future__ import annotations

from collections.abc import Iterable

from queuectl_core import hookimpl
from queuectl_core.registry import BackendSpec


@hookimpl
def queuectl_storage_backends() -> Iterable[BackendSpec]:
    return [BackendSpec(name="redis", factory="queuectl_redis.store:open_store",
                        options_model="queuectl_redis.store:RedisOptions",
                        description="a Redis server (example plugin: examples/queuectl-redis)")]
