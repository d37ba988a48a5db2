"""Read basics: stored responses (paged) and per-version counts with a mean score and its CI."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import Query

from promptblame.analysis.summary import mean_ci
from promptblame.api.json_body import json_router
from promptblame.api.params import EARLIEST, LATEST, Filter
from promptblame.api.state import ReadKey, State
from promptblame.errors import InvalidArgument

router = json_router(prefix="/v1", tags=["read"])

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@router.get("/responses")
def list_responses(
    state: State,
    key: ReadKey,
    f: Filter,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> dict[str, Any]:
    """Newest first. Pass `next_cursor` back as `cursor` for the next page."""
    rows = state.store.list_responses(
        key.project_id, f, limit=limit, before=_decode_cursor(cursor) if cursor else None
    )
    for r in rows:
        r["tags"] = dict(r["tags"])
    next_cursor = (
        _encode_cursor(rows[-1]["ts"], rows[-1]["event_id"]) if len(rows) == limit else None
    )
    return {"responses": rows, "next_cursor": next_cursor}


@router.get("/versions")
def list_versions(
    state: State,
    key: ReadKey,
    f: Filter,
    metric: Annotated[str, Query(max_length=128, description="score name to summarize")] = "",
    source: Annotated[str, Query(max_length=256, description="only scores of this source")] = "",
) -> dict[str, Any]:
    """Per app × prompt/model version: responses, first/last seen, mean `metric` with 95% CI."""
    versions = state.store.version_counts(key.project_id, f)
    sums = {}
    if metric:
        state.store.materialize_scores()  # read your writes: include scores just acknowledged
        for s in state.store.version_score_sums(key.project_id, f, metric=metric, source=source):
            sums[_version_key(s)] = s
    for v in versions:
        if metric:
            s = sums.get(_version_key(v), {"n": 0, "total": 0.0, "total_sq": 0.0})
            ci = mean_ci(n=int(s["n"]), total=s["total"], total_sq=s["total_sq"])
            v["score"] = {
                "metric": metric,
                "n": ci.n,
                "mean": ci.mean,
                "ci_low": ci.low,
                "ci_high": ci.high,
                "ci_level": ci.level,
                "reason": ci.reason,
            }
    return {"versions": versions}


def _version_key(row: dict[str, Any]) -> tuple[str, ...]:
    return tuple(row[k] for k in ("app", "prompt_id", "prompt_version", "model", "model_version"))


def _encode_cursor(ts: datetime, event_id: str) -> str:
    raw = f"{(ts - _EPOCH) // timedelta(milliseconds=1)}:{event_id}".encode()
    return base64.urlsafe_b64encode(raw).decode()


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    """A cursor is the client's to send back unchanged: anything else (garbage, an integer
    too large for a date, a date the store cannot hold) is a 422 naming `cursor`."""
    try:
        ms, sep, event_id = base64.urlsafe_b64decode(cursor.encode()).decode().partition(":")
        if not sep or not ms.lstrip("-").isdigit() or len(ms) > 20:
            raise ValueError("not <milliseconds>:<event id>")
        ts = _EPOCH + timedelta(milliseconds=int(ms))
    except (ValueError, UnicodeDecodeError, OverflowError) as exc:
        raise InvalidArgument("cursor", "not a cursor returned by this endpoint") from exc
    if not EARLIEST <= ts <= LATEST:
        raise InvalidArgument(
            "cursor", "not a cursor returned by this endpoint (date out of range)"
        )
    return ts, event_id
