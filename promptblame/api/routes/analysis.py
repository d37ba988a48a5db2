"""Comparisons and experiments: validate, catch the scored table up, delegate to analysis."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any

from fastapi import Path, Query
from pydantic import BaseModel, ConfigDict, Field

from promptblame.analysis.service import (
    CompareSpec,
    ExperimentSpec,
    Test,
    compare_groups,
    comparison_dict,
    experiment_report,
    series_with_change_points,
)
from promptblame.api.json_body import json_router
from promptblame.api.params import TEXT, Filter, Instant, utc
from promptblame.api.state import ReadKey, State
from promptblame.errors import InvalidArgument
from promptblame.releases import rollouts
from promptblame.store import ResponseFilter

router = json_router(prefix="/v1", tags=["analysis"])

Name = Annotated[str, Field(max_length=256)]
Metric = Annotated[str, Field(min_length=1, max_length=128)]
Alpha = Annotated[float, Field(gt=0, le=0.5)]


class Group(BaseModel):
    """Which responses form a group: equality on each field given."""

    model_config = ConfigDict(extra="forbid")
    app: Name = ""
    route: Name = ""
    environment: Name = ""
    prompt_id: Name = ""
    prompt_version: Name = ""
    model: Name = ""
    model_version: Name = ""
    provider: Name = ""
    experiment: Name = ""
    variant: Name = ""
    since: Instant | None = None
    until: Instant | None = None

    def to_filter(self, since: datetime | None, until: datetime | None) -> ResponseFilter:
        d = self.model_dump()
        d["since"] = utc(self.since or since)
        d["until"] = utc(self.until or until)
        return ResponseFilter(**d)


class CompareRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    metric: Metric = Field(description="a score name, or response.latency_ms / .cost_usd / ...")
    source: Name = Field("", description="score source; required when several sources score it")
    a: Group = Field(description="baseline (control)")
    b: Group = Field(description="candidate")
    since: Instant | None = Field(None, description="time window for both groups (inclusive)")
    until: Instant | None = Field(None, description="exclusive")
    test: Test = "auto"
    statistic: Annotated[str, Field(pattern=r"^(mean|median|p\d{1,2})$")] = "p95"
    alpha: Alpha = 0.05
    sequential: bool = Field(False, description="add always-valid (peeking-safe) p-value and CI")
    effect_of_interest: float | None = Field(None, description="effect to report power for")

    def spec(self) -> CompareSpec:
        return CompareSpec(
            metric=self.metric,
            source=self.source,
            a=self.a.to_filter(self.since, self.until),
            b=self.b.to_filter(self.since, self.until),
            test=self.test,
            statistic=self.statistic,
            alpha=self.alpha,
            sequential=self.sequential,
            effect_of_interest=self.effect_of_interest,
        )


@router.post("/compare")
def compare(body: CompareRequest, state: State, key: ReadKey) -> dict[str, Any]:
    """Effect of B vs A on a metric with CI, p-value, the test used and why, power and MDE."""
    state.store.materialize_scores()
    spec = body.spec()
    answer = compare_groups(state.store, key.project_id, spec)
    return {
        "metric": answer.metric,
        "source": answer.source,
        **comparison_dict(answer.comparison),
        "warnings": [*answer.comparison.warnings, *answer.warnings],
        "sequential": answer.sequential,
    }


@router.get(f"/experiments/{{experiment:{TEXT}}}")
def experiment(
    experiment: Annotated[str, Path(min_length=1, max_length=256)],
    state: State,
    key: ReadKey,
    metric: Annotated[list[str], Query(min_length=1, description="repeat for several")],
    control: Annotated[str, Query(max_length=256)] = "",
    split: Annotated[
        str, Query(max_length=2048, description="expected shares, e.g. control:50,b:50")
    ] = "",
    source: Annotated[str, Query(max_length=256)] = "",
    alpha: Annotated[float, Query(gt=0, le=0.5)] = 0.05,
    sequential: Annotated[
        bool | None, Query(description="default: on for a rollout's step, which is watched")
    ] = None,
    since: Instant | None = None,
    until: Instant | None = None,
) -> dict[str, Any]:
    """Every arm vs control over every metric, Holm/BH-corrected, with an SRM check. A
    rollout's step (`<rollout id>/<step>`) and a live experiment (`POST /v1/experiments`),
    both served by resolve, default to the label's version as control, the configured split as
    the expected shares, and always-valid inference, since they are looked at while they run."""
    state.store.materialize_scores()
    control, split, watched = rollouts.experiment_defaults(
        state.store, key.project_id, experiment, control, split
    )
    spec = ExperimentSpec(
        experiment=experiment,
        metrics=metric,
        control=control,
        split=_parse_split(split) if split else None,
        source=source,
        alpha=alpha,
        sequential=watched if sequential is None else sequential,
        base=ResponseFilter(since=utc(since), until=utc(until)),
    )
    return experiment_report(state.store, key.project_id, spec)


@router.get("/series")
def series(
    state: State,
    key: ReadKey,
    f: Filter,
    metric: Annotated[str, Query(min_length=1, max_length=128)],
    bucket: Annotated[
        str, Query(pattern=r"^\d{1,6}[smhd]$", description="bucket width: 15m, 1h, 1d, ...")
    ] = "1h",
    source: Annotated[str, Query(max_length=256)] = "",
) -> dict[str, Any]:
    """The metric per time bucket (by response time) with detected change points."""
    seconds = int(bucket[:-1]) * _UNIT[bucket[-1]]
    if seconds < 60:
        raise InvalidArgument("bucket", "must be at least 60 seconds")
    state.store.materialize_scores()
    return series_with_change_points(
        state.store, key.project_id, f, metric=metric, source=source, bucket_seconds=seconds
    )


_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _parse_split(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for part in text.split(","):
        arm, sep, share = part.rpartition(":")
        try:
            value = float(share)
        except ValueError:
            value = -1.0
        if not sep or not arm or not 0 < value < math.inf:
            raise InvalidArgument("split", f"expected arm:share pairs, got {part!r}")
        out[arm] = value
    return out
