"""Wire contracts of ingest: what an app may send, validated per event.

Unknown fields are rejected (a typo such as `promt_version` must not silently drop a version);
free-form attributes belong in `tags`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

Name = Annotated[str, Field(max_length=256)]
Identifier = Annotated[str, Field(min_length=1, max_length=256)]
Text = Annotated[str, Field(max_length=2_000_000)]

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
    tags: Annotated[dict[Name, Annotated[str, Field(max_length=4096)]], Field(max_length=64)] = {}

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
