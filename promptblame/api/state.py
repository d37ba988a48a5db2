"""What the routes share, built by the app's lifespan, and the dependencies that hand it out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from promptblame.api.auth import KeyChecker, Principal, bearer_key
from promptblame.api.metrics import Metrics
from promptblame.ingest.otlp_pool import OtlpPool
from promptblame.ingest.writer import GroupCommitWriter
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


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.pb
    return state


State = Annotated[AppState, Depends(get_state)]


def _principal(
    state: State, authorization: Annotated[str | None, Depends(bearer_key)] = None
) -> Principal:
    if state.settings.auth_disabled:
        s = state.settings
        return Principal(s.default_project, frozenset({"ingest", "read", "admin"}), "local")
    return state.keys.check(authorization)


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
AppKey = Annotated[Principal, Depends(_scoped("ingest", "read"))]  # what an app's key holds
