"""Accept a batch: decode, turn the valid events into rows, queue them for the writer."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from promptblame.ingest.contracts import IngestLimits
from promptblame.ingest.decode import decode_batch
from promptblame.ingest.rows import responses_table, scores_table
from promptblame.ingest.writer import GroupCommitWriter

_TABLES: dict[str, Callable[[str, Any, datetime], pa.Table]] = {
    "responses": responses_table,
    "scores": scores_table,
}


@dataclass
class Accepted:
    accepted: int
    rejected: list[dict[str, Any]]
    written: Future[None]


def accept(
    kind: str,
    body: bytes,
    *,
    project_id: str,
    writer: GroupCommitWriter,
    limits: IngestLimits,
) -> Accepted:
    """`kind` is "responses" or "scores". Raises QueueFull before anything is queued."""
    decoded = decode_batch(body, kind, limits=limits)
    rows = _TABLES[kind](project_id, decoded.events, datetime.now(UTC))
    return Accepted(len(decoded.events), decoded.rejected, writer.submit(kind, rows))
