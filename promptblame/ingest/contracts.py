"""Wire contracts of ingest: what an app may send, validated per event.

Unknown fields are rejected (a typo such as `promt_version` must not silently drop a version);
free-form attributes belong in `tags`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, create_model, field_validator

# Default limits (the Settings fields max_name_chars, max_text_chars, max_tags,
# max_tag_value_chars change them; `contracts_for` builds the models for other values).
NAME_CHARS = 256
TEXT_CHARS = 2_000_000
TAGS = 64
TAG_VALUE_CHARS = 4096

Name = Annotated[str, Field(max_length=NAME_CHARS)]
Identifier = Annotated[str, Field(min_length=1, max_length=NAME_CHARS)]
Text = Annotated[str, Field(max_length=TEXT_CHARS)]

# Events dated further ahead than this are a clock or unit bug on the sender's side.
MAX_FUTURE = timedelta(days=1)
MIN_TS = datetime(2000, 1, 1, tzinfo=UTC)


def _utc(v: datetime) -> datetime:
    """Naive timestamps are taken as UTC; absurd ones are refused with the reason.

    The clock is read once per validation pass (a context key set by decode_batch), not once
    per event: this runs for every event on the ingest hot path.
    """
    v = v.replace(tzinfo=UTC) if v.tzinfo is None else v.astimezone(UTC)
    if v < MIN_TS:
        raise ValueError("is before 2000-01-01 (seconds sent as milliseconds, or unset?)")
    return v


def _not_future(v: datetime, info: ValidationInfo) -> datetime:
    latest = (info.context or {}).get("latest_ts") or datetime.now(UTC) + MAX_FUTURE
    if v > latest:
        raise ValueError("is more than a day in the future")
    return v


class ResponseEvent(BaseModel):
    """One LLM response. Required: event_id, ts, app, model."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)

    event_id: Identifier
    ts: datetime
    app: Identifier
    model: Identifier
    route: Name = ""
    environment: Name = ""
    prompt_id: Name = ""
    prompt_version: Name = ""
    model_version: Name = ""
    provider: Name = ""
    experiment: Name = ""
    variant: Name = ""
    case_id: Name = ""
    trace_id: Name = ""
    span_id: Name = ""
    user_id: Name = ""
    session_id: Name = ""
    input: Text = ""
    output: Text = ""
    expected_output: Text = ""
    latency_ms: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    input_tokens: Annotated[int, Field(ge=0, lt=2**32)] | None = None
    output_tokens: Annotated[int, Field(ge=0, lt=2**32)] | None = None
    cost_usd: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    status: Literal["ok", "error"] = "ok"
    error_type: Name = ""
    tags: Annotated[
        dict[Name, Annotated[str, Field(max_length=TAG_VALUE_CHARS)]], Field(max_length=TAGS)
    ] = {}

    @field_validator("ts")
    @classmethod
    def _ts(cls, v: datetime, info: ValidationInfo) -> datetime:
        return _not_future(_utc(v), info)


class ScoreEvent(BaseModel):
    """One score of one response. It may arrive before or long after the response."""

    model_config = ConfigDict(extra="forbid")

    event_id: Identifier
    name: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:/-]+$")]
    value: Annotated[float, Field(allow_inf_nan=False)]
    source: Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9_.:@/-]+$")] = (
        "app"
    )
    comment: Annotated[str, Field(max_length=10_000)] = ""
    ts: datetime | None = None

    @field_validator("ts")
    @classmethod
    def _ts_utc(cls, v: datetime | None, info: ValidationInfo) -> datetime | None:
        return None if v is None else _not_future(_utc(v), info)


class ResponsesBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    responses: list[ResponseEvent]


class ScoresBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scores: list[ScoreEvent]


class PromptVersionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    template: Annotated[str, Field(min_length=1, max_length=1_000_000)]
    author: Name = ""
    labels: Annotated[list[Name], Field(max_length=32)] = []


@dataclass(frozen=True)
class IngestLimits:
    """What one request may hold (Settings.ingest_limits() reads them from the environment)."""

    events: int = 10_000
    name_chars: int = NAME_CHARS
    text_chars: int = TEXT_CHARS
    tags: int = TAGS
    tag_value_chars: int = TAG_VALUE_CHARS


@dataclass(frozen=True)
class Contracts:
    """The event and batch models that enforce one set of limits."""

    response: type[ResponseEvent]
    score: type[ScoreEvent]
    responses: type[ResponsesBatch]
    scores: type[ScoresBatch]


_NAME_FIELDS = (
    "route",
    "environment",
    "prompt_id",
    "prompt_version",
    "model_version",
    "provider",
    "experiment",
    "variant",
    "case_id",
    "trace_id",
    "span_id",
    "user_id",
    "session_id",
    "error_type",
)
_TEXT_FIELDS = ("input", "output", "expected_output")


@functools.cache
def contracts_for(limits: IngestLimits) -> Contracts:
    """The models for `limits`: the classes above for the defaults, subclasses that only change
    the length/count constraints otherwise (same names, so errors and the schema read alike)."""
    if (limits.name_chars, limits.text_chars, limits.tags, limits.tag_value_chars) == (
        NAME_CHARS,
        TEXT_CHARS,
        TAGS,
        TAG_VALUE_CHARS,
    ):
        return Contracts(ResponseEvent, ScoreEvent, ResponsesBatch, ScoresBatch)
    name = Annotated[str, Field(max_length=limits.name_chars)]
    ident = Annotated[str, Field(min_length=1, max_length=limits.name_chars)]
    text = Annotated[str, Field(max_length=limits.text_chars)]
    value = Annotated[str, Field(max_length=limits.tag_value_chars)]
    fields: dict[str, Any] = {f: (ident, ...) for f in ("event_id", "app", "model")}
    fields.update({f: (name, "") for f in _NAME_FIELDS})
    fields.update({f: (text, "") for f in _TEXT_FIELDS})
    fields["tags"] = (Annotated[dict[name, value], Field(max_length=limits.tags)], {})
    response = create_model("ResponseEvent", __base__=ResponseEvent, **fields)
    score = create_model("ScoreEvent", __base__=ScoreEvent, event_id=(ident, ...))
    response_list: Any = list[response]  # type: ignore[valid-type]
    score_list: Any = list[score]  # type: ignore[valid-type]
    responses = create_model(
        "ResponsesBatch", __base__=ResponsesBatch, responses=(response_list, ...)
    )
    scores = create_model("ScoresBatch", __base__=ScoresBatch, scores=(score_list, ...))
    return Contracts(response, score, responses, scores)
