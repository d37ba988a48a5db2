"""How every route reads a JSON body: `ingest.strict_json.loads`, never plain `json.loads`.

A repeated key or text that is not Unicode is a 400 naming where it is (FastAPI's own reading
keeps the last of two values and lets lone surrogates through). Routes get it by being on a
router made with `json_router(...)` (FastAPI then parses their pydantic/`Body` parameters
through `StrictJSONRequest.json`); a route that reads its body itself calls `read_json`.
tests/test_ambiguous_input.py fails for a route not on such a router, and sends a repeated
key to every operation with a JSON body in the OpenAPI document.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.routing import APIRoute

from promptblame.errors import MalformedBody
from promptblame.ingest import strict_json


class StrictJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = strict_json.loads(await self.body())
        return self._json


class StrictJSONRoute(APIRoute):
    """An APIRoute whose JSON body is parsed by `strict_json.loads`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(StrictJSONRequest(request.scope, request.receive))

        return strict


def json_router(**kwargs: Any) -> APIRouter:
    """An APIRouter for the app: use it (not `APIRouter`) for every router module."""
    return APIRouter(route_class=StrictJSONRoute, **kwargs)


async def read_json(request: Request) -> Any:
    """The body as strict JSON, for a route that takes `Request` and reads the body itself
    (MalformedBody, a 400, for any body that is not one unambiguous JSON document)."""
    try:
        return strict_json.loads(await request.body())
    except json.JSONDecodeError as exc:
        raise MalformedBody(f"the body is not valid JSON: {exc}") from None
