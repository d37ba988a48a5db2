"""URLs whose path or query is not UTF-8 once percent-decoded are refused (400 naming the part).

Starlette decodes both with `errors="replace"`: `/v1/prompts/%FF/versions/v1` and
`/v1/prompts/%FE/versions/v1` would both name the prompt "\ufffd", one overwriting the other's
meaning, as invalid UTF-8 in an ingested identifier once did. Cheap: only a URL holding "%"
or a non-ASCII byte is looked at.
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

from fastapi import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from promptblame.api.errors import error_response


class Utf8Urls:
    """Pure ASGI middleware in front of every route."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            problem = url_problem(scope.get("raw_path") or b"", scope.get("query_string") or b"")
            if problem:
                await error_response(Request(scope), problem, 400, {})(scope, receive, send)
                return
        await self.app(scope, receive, send)


def url_problem(raw_path: bytes, query: bytes) -> str | None:
    """What is not UTF-8 in the URL, in words; None when all of it is."""
    if not _decodes(raw_path):
        return (
            "the URL path is not UTF-8 once percent-decoded (e.g. %FF); names in paths are"
            " percent-encoded UTF-8"
        )
    if b"%" in query or not query.isascii():
        for part in query.split(b"&"):
            name, _, value = part.partition(b"=")
            if not (_decodes(name) and _decodes(value)):
                shown = unquote_to_bytes(name).decode("utf-8", "replace")
                return (
                    f"query parameter {shown!r} is not UTF-8 once percent-decoded (e.g. %FF);"
                    " values are percent-encoded UTF-8"
                )
    return None


def _decodes(raw: bytes) -> bool:
    if b"%" not in raw and raw.isascii():
        return True
    try:
        unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
