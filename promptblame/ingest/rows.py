"""Validated events → arrow tables in the store's layout (column by column: cheap in Python)."""

from __future__ import annotations

import operator
from collections.abc import Sequence
from datetime import datetime

import pyarrow as pa

from promptblame.ingest.contracts import ResponseEvent, ScoreEvent
from promptblame.store.schema import RESPONSES_ARROW, SCORES_ARROW

_FIELDS = [f for f in RESPONSES_ARROW if f.name not in ("project_id", "received_at", "tags")]
_GET = operator.attrgetter(*(f.name for f in _FIELDS))


def responses_table(
    project_id: str, events: Sequence[ResponseEvent], received_at: datetime
) -> pa.Table:
    n = len(events)
    # one C-level transpose instead of a getattr loop per column (the ingest hot path)
    cols = (
        dict(zip((f.name for f in _FIELDS), zip(*map(_GET, events), strict=True), strict=True))
        if events
        else {}
    )
    arrays: list[pa.Array] = []
    for f in RESPONSES_ARROW:
        if f.name == "project_id":
            values: Sequence[object] = [project_id] * n
        elif f.name == "received_at":
            values = [received_at] * n
        elif f.name == "tags":
            values = [e.tags for e in events]  # pyarrow maps take dicts
        else:
            values = cols.get(f.name, ())
        arrays.append(pa.array(values, type=f.type))
    return pa.Table.from_arrays(arrays, schema=RESPONSES_ARROW)


def scores_table(project_id: str, scores: Sequence[ScoreEvent], received_at: datetime) -> pa.Table:
    n = len(scores)
    return pa.Table.from_arrays(
        [
            pa.array([project_id] * n, pa.string()),
            pa.array([s.event_id for s in scores], pa.string()),
            pa.array([s.name for s in scores], pa.string()),
            pa.array([s.source for s in scores], pa.string()),
            pa.array([s.value for s in scores], pa.float64()),
            pa.array([s.comment for s in scores], pa.string()),
            pa.array([s.ts or received_at for s in scores], SCORES_ARROW.field("ts").type),
            pa.array([received_at] * n, SCORES_ARROW.field("received_at").type),
        ],
        schema=SCORES_ARROW,
    )
