"""Validated events → arrow tables in the store's layout (column by column: cheap in Python)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import pyarrow as pa

from promptblame.ingest.contracts import ResponseEvent, ScoreEvent
from promptblame.store.schema import RESPONSES_ARROW, SCORES_ARROW


def responses_table(
    project_id: str, events: Sequence[ResponseEvent], received_at: datetime
) -> pa.Table:
    n = len(events)
    cols: list[pa.Array] = []
    for f in RESPONSES_ARROW:
        if f.name == "project_id":
            values: list[object] = [project_id] * n
        elif f.name == "received_at":
            values = [received_at] * n
        elif f.name == "tags":
            values = [list(e.tags.items()) for e in events]
        else:
            values = [getattr(e, f.name) for e in events]
        cols.append(pa.array(values, type=f.type))
    return pa.Table.from_arrays(cols, schema=RESPONSES_ARROW)


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
