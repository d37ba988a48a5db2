"""Response filters and metrics rendered as SQL fragments with `{name:Type}` placeholders.

Column names and expressions come from fixed tables here, never from user input; user values
only ever travel as parameters (prefixed per filter, so several filters fit in one query).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

FAR_PAST = datetime(1970, 1, 1, tzinfo=UTC)
FAR_FUTURE = datetime(2200, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class ResponseFilter:
    """Equality on each non-empty field, and since <= ts < until."""

    app: str = ""
    route: str = ""
    environment: str = ""
    prompt_id: str = ""
    prompt_version: str = ""
    model: str = ""
    model_version: str = ""
    provider: str = ""
    experiment: str = ""
    variant: str = ""
    since: datetime | None = None
    until: datetime | None = None


FILTER_COLUMNS = tuple(f.name for f in fields(ResponseFilter) if f.name not in ("since", "until"))

# Metrics read straight off the responses table; any other metric name is a score name.
BUILTIN_METRICS = {
    "response.latency_ms": "toFloat64(latency_ms)",
    "response.cost_usd": "toFloat64(cost_usd)",
    "response.input_tokens": "toFloat64(input_tokens)",
    "response.output_tokens": "toFloat64(output_tokens)",
    "response.error": "toFloat64(status = 'error')",
}


def filter_sql(prefix: str = "f") -> str:
    """A boolean SQL expression over `responses` columns for the filter bound as `prefix`."""
    return " AND ".join(
        [
            *(
                f"({{{prefix}_{c}:String}} = '' OR {c} = {{{prefix}_{c}:String}})"
                for c in FILTER_COLUMNS
            ),
            f"ts >= {{{prefix}_since:DateTime64(3)}}",
            f"ts < {{{prefix}_until:DateTime64(3)}}",
        ]
    )


def filter_params(f: ResponseFilter, prefix: str = "f") -> dict[str, Any]:
    out: dict[str, Any] = {f"{prefix}_{c}": getattr(f, c) for c in FILTER_COLUMNS}
    out[f"{prefix}_since"] = f.since or FAR_PAST
    out[f"{prefix}_until"] = f.until or FAR_FUTURE
    return out


def metric_values_sql(metric: str, *, source: str, columns: str, where: str) -> str:
    """SQL of (event_id, <columns>, value): one value per response passing `where`.

    Score metrics read `scored` (scores with their response's dimensions; binds {m}, {src}).
    With a source, (event, name, source) is unique; without one, a response scored by several
    sources counts once with their mean (slower: a GROUP BY event). `where` and `columns` may
    use any response dimension, case_id and ts.
    """
    expr = BUILTIN_METRICS.get(metric)
    if expr is not None:
        return (
            f"SELECT event_id, {columns}, {expr} AS value FROM responses FINAL"
            f" WHERE project_id = {{p:String}} AND ({where}) AND isNotNull(value)"
        )
    scored = "SELECT * FROM scored FINAL WHERE project_id = {p:String} AND name = {m:String}"
    if source:
        return f"SELECT event_id, {columns}, value FROM ({scored} AND source = {{src:String}})" + (
            f" WHERE {where}"
        )
    per_event = (
        f"SELECT event_id, {_ANY_DIMS}, avg(value) AS value FROM ({scored}) GROUP BY event_id"
    )
    return f"SELECT event_id, {columns}, value FROM ({per_event}) WHERE {where}"


_ANY_DIMS = ", ".join(f"any({c}) AS {c}" for c in (*FILTER_COLUMNS, "case_id", "ts"))
