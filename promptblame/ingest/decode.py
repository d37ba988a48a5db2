"""Turn a request body into valid events plus per-event rejections.

Fast path: one pydantic pass over the whole body. Only when some event is invalid do we
re-validate event by event, so one bad record costs its batch nothing but its own rejection.
"""

from __future__ import annotations

import functools
import json
import re
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

import pydantic_core
from pydantic import BaseModel, TypeAdapter, ValidationError

from promptblame.errors import InvalidArgument, MalformedBody, TooLarge
from promptblame.ingest.contracts import MAX_FUTURE, IngestLimits, contracts_for

E = TypeVar("E", bound=BaseModel)


@dataclass
class Decoded(Generic[E]):
    events: list[E]
    rejected: list[dict[str, Any]] = field(default_factory=list)


def gunzip(data: bytes, *, limit: int) -> bytes:
    """Inflate gzip without ever holding more than `limit` bytes (gzip bombs).

    Several gzip members one after the other are one body (RFC 1952, as `gzip.decompress`
    reads them); anything else after a member is refused rather than silently dropped."""
    out = bytearray()
    rest = data
    while True:
        d = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            out += d.decompress(rest, limit + 1 - len(out))
        except zlib.error as exc:
            raise MalformedBody(f"Content-Encoding is gzip but the body is not: {exc}") from None
        if len(out) > limit or d.unconsumed_tail:
            raise TooLarge(
                f"body is over {limit} bytes once decompressed (PROMPTBLAME_MAX_REQUEST_BYTES)"
            )
        if not d.eof:
            raise MalformedBody("gzip body is truncated")
        rest = d.unused_data
        if not rest:
            return bytes(out)
        if not rest.startswith(b"\x1f\x8b"):
            raise MalformedBody(f"{len(rest)} bytes after the end of the gzip data")


def error_list(exc: ValidationError, *, strip: int = 0) -> list[dict[str, str]]:
    """pydantic errors as [{field, message}], the field a dotted path."""
    return [
        {
            "field": ".".join(str(p) for p in err["loc"][strip:]) or "(event)",
            "message": err["msg"],
        }
        for err in exc.errors(include_url=False)
    ]


def _lenient_json(body: bytes) -> Any:
    """Parse JSON that may hold text that is not valid Unicode.

    LLM output can carry lone UTF-16 surrogates (`"\\udc80"`, legal JSON syntax) or raw
    invalid UTF-8; neither can be stored as UTF-8. Instead of refusing the whole batch for one
    garbled response, such code units become U+FFFD (as browsers do) and the rest is kept.
    """
    try:
        return pydantic_core.from_json(body)
    except ValueError as exc:
        strict_error = exc
    if "recursion limit" in str(strict_error):  # no event nests that deep: not worth a retry
        raise MalformedBody(f"body is not valid JSON: nested too deeply ({strict_error})")
    try:
        return _replace_surrogates(json.loads(body.decode("utf-8", errors="replace")))
    except RecursionError:
        raise MalformedBody("body is not valid JSON: nested too deeply") from None
    except ValueError:
        raise MalformedBody(f"body is not valid JSON: {strict_error}") from None


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # json.loads has already joined valid pairs


def _replace_surrogates(v: Any) -> Any:
    if isinstance(v, str):
        return _LONE_SURROGATE.sub("\ufffd", v)
    if isinstance(v, list):
        return [_replace_surrogates(x) for x in v]
    if isinstance(v, dict):
        return {_replace_surrogates(k): _replace_surrogates(x) for k, x in v.items()}
    return v


@functools.cache
def _models(limits: IngestLimits) -> dict[str, tuple[type[BaseModel], TypeAdapter[Any]]]:
    c = contracts_for(limits)
    return {
        "responses": (c.responses, TypeAdapter(c.response)),
        "scores": (c.scores, TypeAdapter(c.score)),
    }


DEFAULT_LIMITS = IngestLimits()


def _too_many(n: int, key: str, limit: int) -> TooLarge:
    return TooLarge(
        f"{key}: {n} in one request; the limit is {limit} (PROMPTBLAME_MAX_EVENTS_PER_REQUEST)"
    )


def decode_batch(
    body: bytes,
    key: str,
    *,
    max_events: int | None = None,
    limits: IngestLimits = DEFAULT_LIMITS,
) -> Decoded[Any]:
    """Validate `{"<key>": [event, ...]}`; invalid events are reported by index.

    `max_events` defaults to `limits.events`; the string and tag limits come from `limits`."""
    limit = limits.events if max_events is None else max_events
    batch_model, event_adapter = _models(limits)[key]
    context = {"latest_ts": datetime.now(UTC) + MAX_FUTURE}
    try:
        batch = batch_model.model_validate_json(body, context=context)
        events: list[Any] = getattr(batch, key)
        if len(events) > limit:
            raise _too_many(len(events), key, limit)
        return Decoded(events)
    except ValidationError:
        pass  # some event is invalid (or the body is not JSON): sort it out below

    doc = _lenient_json(body)
    if not isinstance(doc, dict) or not isinstance(doc.get(key), list):
        raise InvalidArgument(key, f'the body must be a JSON object {{"{key}": [...]}}')
    extra = sorted(set(doc) - {key})
    if extra:
        raise InvalidArgument(extra[0], "unknown top-level field")
    items = doc[key]
    if len(items) > limit:
        raise _too_many(len(items), key, limit)

    out: Decoded[Any] = Decoded([])
    for i, item in enumerate(items):
        try:
            out.events.append(event_adapter.validate_python(item, context=context))
        except ValidationError as exc:
            event_id = item.get("event_id") if isinstance(item, dict) else None
            out.rejected.append(
                {
                    "index": i,
                    "event_id": event_id if isinstance(event_id, str) else None,
                    "errors": error_list(exc),
                }
            )
    return out
