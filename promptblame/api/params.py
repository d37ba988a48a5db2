"""Query parameters shared by read endpoints: the response filter; the `text` path convertor."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, Query
from pydantic import AfterValidator
from starlette.convertors import Convertor, register_url_convertor

from promptblame.store import ResponseFilter

Q = Annotated[str, Query(max_length=256)]

# What a ClickHouse DateTime64(3) holds: a bound outside it cannot be a query parameter.
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(2299, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)


def _in_range(v: datetime) -> datetime:
    """Naive is UTC; outside what the store holds is refused (a 422 naming the field)."""
    problem = "must be between 1900-01-01 and 2299-12-31 (UTC)"
    try:
        v = v.replace(tzinfo=UTC) if v.tzinfo is None else v.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00+05:00 is before year 1 in UTC
        raise ValueError(problem) from None
    if not EARLIEST <= v <= LATEST:
        raise ValueError(problem)
    return v


Instant = Annotated[datetime, AfterValidator(_in_range)]


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
    since: Annotated[Instant | None, Query(description="ISO 8601, inclusive")] = None,
    until: Annotated[Instant | None, Query(description="ISO 8601, exclusive")] = None,
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


class _Text(Convertor[str]):
    """A path parameter holding any text, "/" and newlines included (the last parameter's match
    extends to the end, an earlier one's to the last separator after it).

    Names the apps choose (prompt ids, versions, experiments) may hold "/" ("support/answer",
    "release/2026-11"); Starlette routes the decoded path, so even %2F arrives as "/"."""

    regex = "(?s:.+)"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


TEXT = "text"  # use as "/{name:text}"
register_url_convertor(TEXT, _Text())
