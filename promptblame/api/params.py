"""Query parameters shared by read endpoints: the response filter."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, Query

from promptblame.store import ResponseFilter

Q = Annotated[str, Query(max_length=256)]


def utc(v: datetime | None) -> datetime | None:
    """Naive datetimes in requests are UTC."""
    if v is None:
        return None
    return v.replace(tzinfo=UTC) if v.tzinfo is None else v


def response_filter(
    app: Q = "",
    route: Q = "",
    environment: Q = "",
    prompt_id: Q = "",
    prompt_version: Q = "",
    model: Q = "",
    model_version: Q = "",
    provider: Q = "",
    experiment: Q = "",
    variant: Q = "",
    since: Annotated[datetime | None, Query(description="ISO 8601, inclusive")] = None,
    until: Annotated[datetime | None, Query(description="ISO 8601, exclusive")] = None,
) -> ResponseFilter:
    return ResponseFilter(
        app=app,
        route=route,
        environment=environment,
        prompt_id=prompt_id,
        prompt_version=prompt_version,
        model=model,
        model_version=model_version,
        provider=provider,
        experiment=experiment,
        variant=variant,
        since=utc(since),
        until=utc(until),
    )


Filter = Annotated[ResponseFilter, Depends(response_filter)]
