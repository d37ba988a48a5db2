"""Request body limits for every route: size (413) and the time a client has to send it (408).

Ingest reads its body itself (`routes.ingest.read_body`, which also gunzips within the limit);
the other routes let FastAPI read theirs. This middleware bounds both, so no route can be made
to hold an unbounded body or wait forever on a client that trickles one. The group-commit
writer only ever receives batches that were read in full and validated: a slow client holds
its own connection, never the writer.
"""

from __future__ import annotations

import asyncio

from fastapi import HTTPException, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from promptblame.api.errors import error_response


def body_too_large(limit: int, declared: str | None = None) -> str:
    size = f"body of {declared} bytes" if declared else "body"
    return f"{size} is over the {limit}-byte limit (PROMPTBLAME_MAX_REQUEST_BYTES)"


def body_too_slow(timeout: float) -> str:
    return (
        f"body not received within {timeout:g} s (PROMPTBLAME_BODY_READ_TIMEOUT_SECONDS);"
        " send it faster or in smaller requests"
    )


class BodyLimits:
    """Pure ASGI middleware: a declared Content-Length over `max_bytes` is answered 413 at
    once; otherwise reading the body raises 413 past `max_bytes` and 408 past `timeout`
    seconds from the start of the request (errors raised inside `receive` reach the app's
    exception handlers like any other HTTPException)."""

    def __init__(self, app: ASGIApp, *, max_bytes: int, timeout: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            answer = error_response(
                Request(scope), body_too_large(self.max_bytes, declared), 413, _CLOSE
            )
            await answer(scope, receive, send)
            return

        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        received = 0
        complete = False

        async def limited() -> Message:
            nonlocal received, complete
            if complete:  # later receives only wait for a disconnect: no deadline
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise HTTPException(408, body_too_slow(self.timeout)) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(413, body_too_large(self.max_bytes))
                complete = not message.get("more_body", False)
            else:
                complete = True
            return message

        await self.app(scope, limited, send)


def _header(scope: Scope, name: bytes) -> str | None:
    for k, v in scope.get("headers", ()):
        if k.lower() == name:
            return str(v.decode("latin-1"))
    return None


_CLOSE = {"Connection": "close"}  # the unread body is not worth reading
