"""The OpenAPI document: FastAPI's, plus what FastAPI cannot see by itself.

- Ingest routes read their bodies raw (gzip, per-event rejection), so their request bodies are
  declared here from the same pydantic models that validate them, with the configured limits.
- Every error answer is `{"detail": ...}` (`api.errors`), FastAPI's default 422 schema is not.
- Statuses that middleware and dependencies add to many routes: 401/403/429 wherever a key is
  required, 408/413 wherever a body is read, 400 everywhere (a URL that is not UTF-8; a body
  that is not one unambiguous JSON document), 503 (store unreachable or write queue full).
- OTLP's errors to a protobuf export are protobuf `google.rpc.Status` messages.

tests/test_fuzz_api.py checks every answer of a live server against this document.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from promptblame.api.errors import ErrorBody
from promptblame.ingest.contracts import contracts_for
from promptblame.settings import Settings

REF = "#/components/schemas/{model}"


class Rejection(BaseModel):
    index: int
    event_id: str | None
    errors: list[dict[str, str]]


class IngestResult(BaseModel):
    """200: all stored; 207: the valid ones stored, the others listed by index."""

    accepted: int
    rejected: list[Rejection]


class IngestRefused(IngestResult):
    """422: no event of the batch is valid; `detail` says so, `rejected` says why per event."""

    detail: str


def ref(model: str) -> dict[str, str]:
    return {"$ref": REF.format(model=model)}


def error(description: str, **headers: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": ref("ErrorBody")}},
    }
    if headers:
        out["headers"] = {
            h: {"description": d, "schema": {"type": "string"}} for h, d in headers.items()
        }
    return out


RETRY = "seconds to wait before retrying"
AUTH_ERRORS = {
    "401": error(
        "missing, malformed, unknown or revoked API key",
        **{"WWW-Authenticate": "Bearer"},
    ),
    "403": error("the API key lacks the scope this operation needs"),
    "429": error("the API key is over its rate limit", **{"Retry-After": RETRY}),
}
BODY_ERRORS = {
    "400": error(
        "the body cannot be parsed (not JSON in UTF-8, a key repeated in an object, broken"
        " gzip), or the URL is not UTF-8 once percent-decoded"
    ),
    "408": error("the body was not sent within PROMPTBLAME_BODY_READ_TIMEOUT_SECONDS"),
    "413": error("the body (or its event count) is over the limit"),
}
URL_ERROR = error("the URL's path or query is not UTF-8 once percent-decoded")
UNAVAILABLE = error(
    "the store cannot be reached, or the write queue is full", **{"Retry-After": RETRY}
)


def install_openapi(app: FastAPI, settings: Settings) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _document(app, settings)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _document(app: FastAPI, settings: Settings) -> dict[str, Any]:
    doc = FastAPI.openapi(app)
    c = contracts_for(settings.ingest_limits())
    _, defs = models_json_schema(
        [
            (ErrorBody, "serialization"),
            (IngestResult, "serialization"),
            (IngestRefused, "serialization"),
            (c.responses, "validation"),
            (c.scores, "validation"),
        ],
        ref_template=REF,
    )
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(defs["$defs"])
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    for operations in doc.get("paths", {}).values():
        for op in operations.values():
            responses = op.setdefault("responses", {})
            mine = responses.get("422")
            if (mine is None and ("requestBody" in op or op.get("parameters"))) or (
                mine is not None and _is_fastapi_422(mine)
            ):
                responses["422"] = error("a parameter or the body is invalid (each field named)")
            if op.get("security"):
                for code, answer in AUTH_ERRORS.items():
                    responses.setdefault(code, answer)
            if "requestBody" in op:
                for code, answer in BODY_ERRORS.items():
                    responses.setdefault(code, answer)
            responses.setdefault("400", URL_ERROR)
            responses.setdefault("503", UNAVAILABLE)
    _otlp_errors(doc["paths"].get("/v1/traces", {}).get("post"))
    return doc


RPC_STATUS = {"schema": {"type": "string", "format": "binary", "description": "google.rpc.Status"}}


def _otlp_errors(op: dict[str, Any] | None) -> None:
    """OTLP/HTTP: errors to a protobuf export are a protobuf google.rpc.Status (api.errors)."""
    for code, answer in (op or {}).get("responses", {}).items():
        if code[0] in "45":
            content = {**answer.get("content", {}), "application/x-protobuf": RPC_STATUS}
            op["responses"][code] = {**answer, "content": content}  # type: ignore[index]


def _is_fastapi_422(answer: dict[str, Any]) -> bool:
    schema = answer.get("content", {}).get("application/json", {}).get("schema", {})
    return schema.get("$ref", "").endswith("/HTTPValidationError")
