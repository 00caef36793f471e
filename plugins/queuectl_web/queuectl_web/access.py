"""What every route needs: how the server was started, reads in a worker
thread under the store's lock, the actions' gate, and checked parameters."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import Depends, HTTPException, Request
from starlette.concurrency import run_in_threadpool

from queuectl_core.jobspec import queue_name_problem
from queuectl_core.models import JobState

from .guard import TOKEN_HEADER, token_matches
from .reader import Reader

T = TypeVar("T")


class Settings:
    """How the server was started."""

    def __init__(self, reader: Reader, *, token: str | None, allow_actions: bool) -> None:
        self.reader = reader
        self.token = token
        self.allow_actions = allow_actions


async def read(request: Request, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` in a worker thread, holding the store's lock."""
    reader: Reader = request.app.state.settings.reader

    def locked() -> T:
        with reader.lock:
            return fn(*args, **kwargs)

    return await run_in_threadpool(locked)


def settings_of(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def require_token(request: Request) -> Settings:
    """An action's gate: actions allowed, and the right token sent."""
    settings = settings_of(request)
    if not settings.allow_actions:
        raise HTTPException(403, "read-only: start 'queuectl serve' with --allow-actions "
                                 "(and a token) to retry, cancel, pause or resume")
    given = request.headers.get(TOKEN_HEADER)
    auth = request.headers.get("Authorization", "")
    if given is None and auth.lower().startswith("bearer "):
        given = auth[7:].strip()
    if not token_matches(settings.token, given):
        raise HTTPException(401, f"a valid token is needed in the {TOKEN_HEADER} header",
                            headers={"WWW-Authenticate": "Bearer"})
    return settings


def check_queue(queue: str) -> str:
    problem = queue_name_problem(queue)
    if problem is not None:
        raise HTTPException(422, f"queue name {queue!r}: {problem}")
    return queue


def parse_state(state: str | None) -> JobState | None:
    if not state:
        return None
    try:
        return JobState(state)
    except ValueError:
        names = ", ".join(s.value for s in JobState)
        raise HTTPException(422, f"state must be one of: {names}") from None


#: An action's parameter: the settings, once the gate let the request through.
Gate = Annotated[Settings, Depends(require_token)]
