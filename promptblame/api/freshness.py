"""Every request's reads share one run of the scored-table job (`Store.materialize_scores`)."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from promptblame.store.base import reads_share_one_job_run


class SharedJobRun:
    """Pure ASGI middleware: reads after the first run that began within the request skip the
    job (the request still sees every write acknowledged before it began)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        with reads_share_one_job_run():
            await self.app(scope, receive, send)
