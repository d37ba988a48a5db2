"""What the routes share, built by the app's lifespan, and the dependencies that hand it out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from promptblame.api.auth import KeyChecker, Principal, bearer_key
from promptblame.api.metrics import Metrics
from promptblame.ingest.otlp_pool import OtlpPool
from promptblame.ingest.writer import GroupCommitWriter
from promptblame.refresh_ahead import Miss
from promptblame.releases.resolve import ResolveCache
from promptblame.settings import Settings
from promptblame.store import Store


@dataclass
class AppState:
    settings: Settings
    store: Store
    writer: GroupCommitWriter
    keys: KeyChecker
    metrics: Metrics
    otlp: OtlpPool
    releases: ResolveCache


async def get_state(request: Request) -> AppState:
    """Async: a plain `def` dependency costs every request a hop through the thread pool."""
    state: AppState = request.app.state.pb
    return state


State = Annotated[AppState, Depends(get_state)]


def _check(state: AppState, authorization: str | None, *, block: bool = True) -> Principal:
    if state.settings.auth_disabled:
        s = state.settings
        return Principal(s.default_project, frozenset({"ingest", "read", "admin"}), "local")
    return state.keys.check(authorization, block=block)


def _principal(
    state: State, authorization: Annotated[str | None, Depends(bearer_key)] = None
) -> Principal:
    return _check(state, authorization)


def _scoped(*scopes: str):  # type: ignore[no-untyped-def]
    """A key holding the scope (any of them, when several are named)."""

    def dep(principal: Annotated[Principal, Depends(_principal)]) -> Principal:
        if not principal.scopes & set(scopes):
            principal.require(scopes[0])
        return principal

    return dep


IngestKey = Annotated[Principal, Depends(_scoped("ingest"))]
ReadKey = Annotated[Principal, Depends(_scoped("read"))]
AdminKey = Annotated[Principal, Depends(_scoped("admin"))]
ReviewKey = Annotated[Principal, Depends(_scoped("review", "admin"))]  # may label


async def _app_key(
    state: State, authorization: Annotated[str | None, Depends(bearer_key)] = None
) -> Principal:
    """An ingest or read key, checked in the event loop from the key cache (only a key not
    seen for KEY_CACHE_SECONDS is read, in the thread pool): resolve is called on every app
    request, where thread-pool hops would cost more than the work."""
    try:
        principal = _check(state, authorization, block=False)
    except Miss:
        principal = await run_in_threadpool(_check, state, authorization)
    if not principal.scopes & {"ingest", "read"}:
        principal.require("read")
    return principal


AppKey = Annotated[Principal, Depends(_app_key)]  # what an app's key holds
