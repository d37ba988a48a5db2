"""Domain errors → HTTP, in one place. Bodies are `{"detail": ...}` like FastAPI's own."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from promptblame import errors

_STATUS: list[tuple[type[Exception], int, dict[str, str]]] = [
    (errors.QueueFull, 503, {"Retry-After": "1"}),
    (errors.StoreUnavailable, 503, {"Retry-After": "5"}),
    (errors.DataDirLocked, 503, {"Retry-After": "5"}),
    (errors.Conflict, 409, {}),
    (errors.NotFound, 404, {}),
    (errors.MalformedBody, 400, {}),
    (errors.TooLarge, 413, {}),
    (errors.UnsupportedMedia, 415, {}),
    (errors.Unauthorized, 401, {"WWW-Authenticate": "Bearer"}),
    (errors.Forbidden, 403, {}),
]


def install(app: FastAPI) -> None:
    for exc_type, status, headers in _STATUS:
        app.add_exception_handler(exc_type, _simple(status, headers))
    app.add_exception_handler(errors.InvalidArgument, _invalid_argument)
    app.add_exception_handler(errors.ConfigInvalid, _config_invalid)
    app.add_exception_handler(RequestValidationError, _request_validation)


def _simple(status: int, headers: dict[str, str]):  # type: ignore[no-untyped-def]
    async def handler(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=status, headers=headers)

    return handler


async def _invalid_argument(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, errors.InvalidArgument)
    return JSONResponse({"detail": [{"field": exc.field, "message": exc.message}]}, status_code=422)


async def _config_invalid(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, errors.ConfigInvalid)
    detail = [{"field": p.field, "message": p.message, "line": p.line} for p in exc.problems]
    return JSONResponse({"detail": detail}, status_code=422)


async def _request_validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    detail = [
        {"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in exc.errors()
    ]
    return JSONResponse({"detail": detail}, status_code=422)
