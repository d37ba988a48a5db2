"""Domain errors → HTTP, in one place. Bodies are `{"detail": ...}` like FastAPI's own."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException
from starlette.routing import Match

from promptblame import errors


class ErrorItem(BaseModel):
    field: str = Field(description="dotted path of the field at fault, e.g. responses.3.ts")
    message: str
    line: int | None = Field(None, description="line in the config file, when known")


class ErrorBody(BaseModel):
    """Every error answer: what went wrong, in words or field by field."""

    detail: str | list[ErrorItem]


_STATUS: list[tuple[type[Exception], int, dict[str, str]]] = [
    (errors.QueueFull, 503, {"Retry-After": "1"}),
    (errors.WorkerLost, 503, {"Retry-After": "1"}),
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
    app.add_exception_handler(errors.RateLimited, _rate_limited)
    app.add_exception_handler(errors.LabelConflict, _label_conflict)
    app.add_exception_handler(HTTPException, _http_exception)
    app.add_exception_handler(errors.InvalidArgument, _invalid_argument)
    app.add_exception_handler(errors.ConfigInvalid, _config_invalid)
    app.add_exception_handler(RequestValidationError, _request_validation)


def _simple(status: int, headers: dict[str, str]):  # type: ignore[no-untyped-def]
    async def handler(request: Request, exc: Exception) -> Response:
        return error_response(request, str(exc), status, headers)

    return handler


async def _rate_limited(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.RateLimited)
    return error_response(request, str(exc), 429, {"Retry-After": str(exc.retry_after)})


async def _label_conflict(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.LabelConflict)
    return JSONResponse({"detail": str(exc), "current": exc.current or None}, status_code=409)


def _wants_rpc_status(request: Request) -> bool:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return request.url.path.endswith("/v1/traces") and content_type == _PROTOBUF


# google.rpc.Code per HTTP status, for OTLP's Status answers
_RPC_CODE = {400: 3, 401: 16, 403: 7, 404: 5, 409: 6, 413: 8, 415: 3, 429: 8, 503: 14}
_PROTOBUF = "application/x-protobuf"


def error_response(
    request: Request, message: str, status: int, headers: dict[str, str]
) -> Response:
    """`{"detail": message}`, except to an OTLP exporter sending protobuf: the OTLP/HTTP spec
    has every 4xx/5xx carry a protobuf `google.rpc.Status`, which is what exporters decode
    and log."""
    if _wants_rpc_status(request):
        from google.rpc.status_pb2 import Status

        body = Status(code=_RPC_CODE.get(status, 2), message=message).SerializeToString()
        return Response(body, status_code=status, headers=headers, media_type=_PROTOBUF)
    if _is_page(request):
        return _page(status, [message], headers)
    return JSONResponse({"detail": message}, status_code=status, headers=headers)


def _is_page(request: Request) -> bool:
    """A report page (people in a browser): errors are HTML pages there, JSON on the API."""
    return request.url.path == "/reports" or request.url.path.startswith("/reports/")


def _page(status: int, lines: list[str], headers: dict[str, str] | None = None) -> Response:
    from promptblame.reports.render import render_error

    response = _html_page(render_error(status, lines), status)
    for k, v in (headers or {}).items():
        if k.lower() != "www-authenticate":
            response.headers[k] = v
    return response


def _html_page(body: str, status: int) -> Response:
    from promptblame.api.routes.reports import _html

    return _html(body, status)


def _fields(items: list[tuple[str, str]]) -> list[str]:
    return [f"{field or 'request'}: {message}" for field, message in items]


async def _http_exception(request: Request, exc: Exception) -> Response:
    """FastAPI's own answer, except that a 405 lists every method of the path in `Allow`
    (Starlette lists only those of the first route that matched the path) and a body that
    cannot be decoded says why."""
    assert isinstance(exc, HTTPException)
    if _is_page(request):
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404:
            detail = f"There is no page at {request.url.path}."
        return _page(exc.status_code, [detail], dict(exc.headers or {}))
    if _wants_rpc_status(request) and isinstance(exc.detail, str):
        return error_response(request, exc.detail, exc.status_code, dict(exc.headers or {}))
    if exc.status_code == 400 and exc.detail == _FASTAPI_PARSE_ERROR and exc.__cause__:
        # FastAPI's words for a body the strict JSON reader refused (api.json_body): say why
        cause = exc.__cause__
        why = str(cause) if isinstance(cause, errors.MalformedBody) else None
        exc = HTTPException(400, why or f"the body is not JSON in UTF-8: {cause}")
    elif exc.status_code == 405:
        allow = ", ".join(_methods(request))
        if allow:
            exc = HTTPException(405, f"{request.method} is not allowed here; use {allow}")
            exc.headers = {"Allow": allow}
    return await http_exception_handler(request, exc)


_FASTAPI_PARSE_ERROR = "There was an error parsing the body"
_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def _methods(request: Request) -> list[str]:
    """The methods some route of the app takes on this request's path."""
    out = []
    for method in _METHODS:
        scope = {
            "type": "http",
            "method": method,
            "path": request.scope["path"],
            "root_path": request.scope.get("root_path", ""),
            "headers": [],
            "query_string": b"",
        }
        if any(r.matches(scope)[0] == Match.FULL for r in request.app.router.routes):
            out.append(method)
    return out


async def _invalid_argument(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.InvalidArgument)
    if _is_page(request):
        return _page(422, _fields([(exc.field, exc.message)]))
    return JSONResponse({"detail": [{"field": exc.field, "message": exc.message}]}, status_code=422)


async def _config_invalid(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, errors.ConfigInvalid)
    detail = [{"field": p.field, "message": p.message, "line": p.line} for p in exc.problems]
    return JSONResponse({"detail": detail}, status_code=422)


async def _request_validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    detail = [
        {"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in exc.errors()
    ]
    if _is_page(request):
        # "query.metric: Field required" reads as "metric (in the address): Field required"
        items = [
            (d["field"].replace("query.", "").replace("path.", ""), d["message"]) for d in detail
        ]
        return _page(422, _fields(items))
    return JSONResponse({"detail": detail}, status_code=422)
