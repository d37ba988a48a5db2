"""Turn a request body into valid events plus per-event rejections.

Fast path: one strict parse (jiter: no repeated key, nothing but Unicode) and one pydantic
pass over the whole body. Only when some event is invalid do we validate event by event, so
one bad record costs its batch nothing but its own rejection; only when the strict parse
fails is the body read again (`strict_json.read_marked`) to name what is ambiguous.
"""

from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

import jiter
from pydantic import BaseModel, TypeAdapter, ValidationError

from promptblame.errors import InvalidArgument, MalformedBody, TooLarge
from promptblame.ingest import strict_json
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


# Free text: undecodable code units there become U+FFFD (the event is kept). Everywhere else
# (identifiers, versions, names, tags) they make the event a rejection: rewriting them could
# merge two different events into one.
FREE_TEXT = {
    "responses": frozenset({"input", "output", "expected_output"}),
    "scores": frozenset({"comment"}),
}


def decode_batch(
    body: bytes,
    key: str,
    *,
    max_events: int | None = None,
    limits: IngestLimits = DEFAULT_LIMITS,
) -> Decoded[Any]:
    """Validate `{"<key>": [event, ...]}`; invalid events are reported by index.

    A repeated key outside the events is a MalformedBody (400); inside an event, or text
    that is not Unicode outside its free-text fields, rejects that event naming the field.
    `max_events` defaults to `limits.events`; the string and tag limits come from `limits`."""
    limit = limits.events if max_events is None else max_events
    batch_model, event_adapter = _models(limits)[key]
    context = {"latest_ts": datetime.now(UTC) + MAX_FUTURE}
    try:  # fast path: valid Unicode and no repeated key (jiter checks both), then one pass
        doc: Any = jiter.from_json(body, catch_duplicate_keys=True)
        fast_error = None
    except ValueError as exc:
        doc, fast_error = None, exc
    if fast_error is None:
        try:
            batch = batch_model.model_validate(doc, context=context)
            events: list[Any] = getattr(batch, key)
            if len(events) > limit:
                raise _too_many(len(events), key, limit)
            return Decoded(events)
        except ValidationError:
            pass  # some event is invalid (or the shape is wrong): sort it out below
        marks = strict_json.Marks(repeated=False, maybe_not_unicode=False)
    elif "recursion limit" in str(fast_error):  # no event nests that deep: not worth a retry
        raise MalformedBody(f"body is not valid JSON: nested too deeply ({fast_error})")
    else:  # read again to say which key is repeated, which field is not Unicode
        try:
            doc, marks = strict_json.read_marked(body)
        except ValueError:
            raise MalformedBody(f"body is not valid JSON: {fast_error}") from None

    if isinstance(doc, strict_json.Repeated):
        k = doc.repeated[0]
        raise MalformedBody(
            f"the body's top-level object holds the key {strict_json.shown(k)!r} more than once;"
            " which value is meant is ambiguous: send each key once"
        )
    events_list = isinstance(doc, dict) and isinstance(doc.get(key), list)
    outside = {k: v for k, v in doc.items() if k != key} if events_list else doc
    first = next(strict_json.problems(outside, marks), None)
    if first is not None:  # an ambiguity outside the events: the body has no one meaning
        raise MalformedBody(f"the body is ambiguous JSON at {first.field()}: {first.message()}")
    if not events_list:
        raise InvalidArgument(key, f'the body must be a JSON object {{"{key}": [...]}}')
    extra = sorted(set(doc) - {key})
    if extra:
        raise InvalidArgument(strict_json.shown(extra[0]), "unknown top-level field")
    items = doc[key]
    if len(items) > limit:
        raise _too_many(len(items), key, limit)

    free_text = FREE_TEXT[key]
    out: Decoded[Any] = Decoded([])
    for i, item in enumerate(items):
        found = list(strict_json.problems(item, marks, free_text=free_text))
        if found:
            out.rejected.append(
                {
                    "index": i,
                    "event_id": _event_id(item),
                    "errors": [{"field": p.field(), "message": p.message()} for p in found],
                }
            )
            continue
        if marks.maybe_not_unicode and isinstance(item, dict):
            for f in free_text & item.keys():
                if isinstance(item[f], str):
                    item[f] = strict_json.replace_surrogates(item[f])
        try:
            out.events.append(event_adapter.validate_python(item, context=context))
        except ValidationError as exc:
            out.rejected.append(
                {"index": i, "event_id": _event_id(item), "errors": error_list(exc)}
            )
    return out


def _event_id(item: Any) -> str | None:
    """The rejected event's id as sent, when it is text that can be answered as sent."""
    event_id = item.get("event_id") if isinstance(item, dict) else None
    if not isinstance(event_id, str) or strict_json.has_surrogate(event_id):
        return None
    return event_id
