"""Response filters and metrics rendered as SQL fragments with `{name:Type}` placeholders.

Column names and expressions come from fixed tables here, never from user input; user values
only ever travel as parameters (prefixed per filter, so several filters fit in one query).
"""

from __future__ import annotations

import json
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


@dataclass(frozen=True)
class ScoringTarget:
    """The responses one evaluator version still has to score: matching its filter (any of the
    listed values; empty = all), in its sample, with ts >= since and received_at >= received_from,
    and neither scored nor (unless retry_errors) failed by `source` before."""

    name: str
    source: str
    apps: tuple[str, ...] = ()
    routes: tuple[str, ...] = ()
    environments: tuple[str, ...] = ()
    sample_rate: float = 1.0
    since: datetime = FAR_PAST
    received_from: datetime = FAR_PAST
    retry_errors: bool = False


EVAL_VERSION_COLUMNS = ("prompt_version", "model_version", "model")


@dataclass(frozen=True)
class EvalRun:
    """One eval run: an app's responses in `environment` with `version` in `column`, tagged
    run_id = `run_id` ('' = untagged). The CI gate compares two of these case by case."""

    app: str
    environment: str
    column: str
    version: str
    run_id: str = ""

    def __post_init__(self) -> None:
        if self.column not in EVAL_VERSION_COLUMNS:
            raise ValueError(f"not a version column: {self.column!r}")

    def sql(self, *, any_run: bool = False) -> str:
        """Boolean SQL over `responses` (binds {p} and the params below); cases only."""
        run = "" if any_run else " AND tags['run_id'] = {run:String} AND case_id != ''"
        return (
            "project_id = {p:String} AND app = {app:String} AND environment = {env:String}"
            f" AND {self.column} = {{v:String}}{run}"
        )

    def params(self) -> dict[str, Any]:
        return {"app": self.app, "env": self.environment, "v": self.version, "run": self.run_id}


# Sampling by a hash of event_id: reruns, restarts and every worker choose the same responses.
SAMPLE_SCALE = 1_000_000


def json_rows(param: str, element: str) -> str:
    """The rows of a list parameter: chDB takes no list parameters, so a list travels as one
    JSON text `{param:String}` whose elements are of ClickHouse type `element`."""
    return f"arrayJoin(JSONExtract({{{param}:String}}, 'Array({element})'))"


def target_sql(prefix: str) -> str:
    """Boolean SQL over `responses` for a ScoringTarget bound as `prefix` (also binds {p})."""
    t = prefix
    parts = [
        f"(empty(JSONExtract({{{t}_{c}:String}}, 'Array(String)'))"
        f" OR has(JSONExtract({{{t}_{c}:String}}, 'Array(String)'), {col}))"
        for c, col in (("apps", "app"), ("routes", "route"), ("environments", "environment"))
    ]
    parts += [
        f"cityHash64(event_id) % {SAMPLE_SCALE} < {{{t}_thr:UInt64}}",
        f"ts >= {{{t}_since:DateTime64(3)}}",
        f"received_at >= {{{t}_from:DateTime64(3)}}",
        "event_id NOT IN (SELECT event_id FROM scores WHERE project_id = {p:String}"
        f" AND name = {{{t}_name:String}} AND source = {{{t}_src:String}})",
        f"({{{t}_retry:UInt8}} OR event_id NOT IN (SELECT event_id FROM score_errors"
        f" WHERE project_id = {{p:String}} AND source = {{{t}_src:String}}))",
    ]
    return "(" + " AND ".join(parts) + ")"


def target_params(t: ScoringTarget, prefix: str) -> dict[str, Any]:
    return {
        f"{prefix}_apps": json.dumps(list(t.apps)),
        f"{prefix}_routes": json.dumps(list(t.routes)),
        f"{prefix}_environments": json.dumps(list(t.environments)),
        f"{prefix}_thr": round(t.sample_rate * SAMPLE_SCALE),
        f"{prefix}_since": t.since,
        f"{prefix}_from": t.received_from,
        f"{prefix}_name": t.name,
        f"{prefix}_src": t.source,
        f"{prefix}_retry": int(t.retry_errors),
    }


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
