"""Review as config: the `review.yaml` format (annotation queues and trust rules), validated.

A queue is a named, deterministic sample of responses (the filters of /v1/responses, then a
sampling rate or a stratified sample per version, or an automatic feed: an incident's
before/after or a rollout's incumbent/candidate) and the label schema reviewers answer. A label
field's name is the metric it labels: its values become scores `name` with source
`human:<queue>`, and the evaluators scoring that metric are measured against them.

A trust rule sets, per metric, the agreement with humans an evaluator version needs before
its scores may decide a gate.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from promptblame.configfile import Lines, problem, problems, read_yaml
from promptblame.errors import ConfigInvalid, InvalidArgument, Problem
from promptblame.store.filters import ResponseFilter

NAME = r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$"
Name = Annotated[str, Field(pattern=NAME)]
Text = Annotated[str, Field(max_length=256)]
STRATA = ("prompt_version", "model_version", "model", "app", "route", "variant", "environment")
FieldKind = Literal["pass_fail", "scale", "categories", "number"]


class LabelField(BaseModel):
    """One question of a queue. pass_fail stores 1 (pass) / 0 (fail); scale an integer in
    [min, max]; categories the category's index; number any value in [min, max]."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Name
    kind: FieldKind
    question: Annotated[str, Field(max_length=500)] = ""
    min: float | None = None
    max: float | None = None
    categories: Annotated[list[Text], Field(max_length=9)] = []
    required: bool = True

    @model_validator(mode="after")
    def _shape(self) -> LabelField:
        if self.kind == "categories":
            if len(self.categories) < 2 or len(set(self.categories)) != len(self.categories):
                raise ValueError("categories: give 2-9 distinct categories")
        elif self.categories:
            raise ValueError("categories: only for kind categories")
        if self.kind == "scale":
            lo, hi = (
                self.min if self.min is not None else 1,
                self.max if self.max is not None else 5,
            )
            if lo != int(lo) or hi != int(hi) or not 2 <= hi - lo + 1 <= 9:
                raise ValueError("min/max: a scale is 2-9 whole steps (default 1-5)")
        if self.kind == "number" and (self.min is None or self.max is None or self.min >= self.max):
            raise ValueError("min/max: a number field needs min < max")
        if self.kind in ("pass_fail", "categories") and (self.min, self.max) != (None, None):
            raise ValueError("min/max: only for scale and number fields")
        return self

    @property
    def low(self) -> float:
        return 0.0 if self.kind in ("pass_fail", "categories") else float(self.min or 1)

    @property
    def high(self) -> float:
        if self.kind == "pass_fail":
            return 1.0
        if self.kind == "categories":
            return float(len(self.categories) - 1)
        return float(self.max if self.max is not None else 5)

    def choices(self) -> list[tuple[float, str]]:
        """(stored value, shown text) of a discrete field; [] for number."""
        if self.kind == "pass_fail":
            return [(1.0, "pass"), (0.0, "fail")]
        if self.kind == "categories":
            return [(float(i), c) for i, c in enumerate(self.categories)]
        if self.kind == "scale":
            return [(float(v), str(v)) for v in range(int(self.low), int(self.high) + 1)]
        return []

    def parse(self, raw: Any) -> float:
        """A submitted answer as the stored number; InvalidArgument names the field."""
        loc = f"labels.{self.name}"
        if self.kind == "pass_fail":
            if isinstance(raw, bool | int | str) and raw in ("pass", "1", 1):  # True == 1
                return 1.0
            if isinstance(raw, bool | int | str) and raw in ("fail", "0", 0):
                return 0.0
            raise InvalidArgument(loc, f"expected pass or fail, got {raw!r}")
        if self.kind == "categories":
            if isinstance(raw, str) and raw in self.categories:
                return float(self.categories.index(raw))
            raise InvalidArgument(
                loc, f"expected one of {', '.join(self.categories)}, got {str(raw)[:80]!r}"
            )
        try:
            value = float(raw) if not isinstance(raw, bool) else math.nan
        except (TypeError, ValueError):
            value = math.nan
        if not math.isfinite(value) or not self.low <= value <= self.high:
            raise InvalidArgument(
                loc, f"expected a number from {self.low:g} to {self.high:g}, got {str(raw)[:80]!r}"
            )
        if self.kind == "scale" and value != int(value):
            raise InvalidArgument(loc, f"expected a whole step of the scale, got {raw!r}")
        return value

    def shown(self, value: float) -> str:
        for v, text in self.choices():
            if v == value:
                return text
        return f"{value:g}"

    def schema_hash(self) -> str:
        return json.dumps(self.model_dump(exclude={"question", "required"}), sort_keys=True)


class Feed(BaseModel):
    """Fill a queue automatically: an incident's responses before/after its shift, or a
    rollout's incumbent/candidate responses; `per_side` items from each side."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    incident: Annotated[str, Field(max_length=64)] = ""
    rollout: Annotated[str, Field(max_length=600)] = ""
    window_hours: Annotated[float, Field(gt=0, le=24 * 90)] = 24.0
    per_side: Annotated[int, Field(ge=1, le=10_000)] = 25

    @model_validator(mode="after")
    def _one(self) -> Feed:
        if bool(self.incident) == bool(self.rollout):
            raise ValueError("name exactly one of incident, rollout")
        return self


class QueueFilter(BaseModel):
    """The filters of /v1/responses."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    app: Text = ""
    route: Text = ""
    environment: Text = ""
    prompt_id: Text = ""
    prompt_version: Text = ""
    model: Text = ""
    model_version: Text = ""
    provider: Text = ""
    experiment: Text = ""
    variant: Text = ""
    since: datetime | None = None
    until: datetime | None = None

    def response_filter(self) -> ResponseFilter:
        return ResponseFilter(**self.model_dump())


class QueueSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Name
    description: Annotated[str, Field(max_length=2000)] = ""
    filter: QueueFilter = QueueFilter()
    sample_rate: Annotated[float, Field(gt=0, le=1)] = 1.0
    stratify_by: Literal["", *STRATA] = ""  # type: ignore[valid-type]
    per_stratum: Annotated[int, Field(ge=1, le=10_000)] | None = None
    feed: Feed | None = None
    max_items: Annotated[int, Field(ge=1, le=100_000)] = 1000
    overlap: Annotated[float, Field(ge=0, le=1)] = 0.0
    """Share of items that two reviewers label (human–human agreement)."""
    fields: Annotated[list[LabelField], Field(min_length=1, max_length=10)]
    instructions: Annotated[str, Field(max_length=4000)] = ""

    @model_validator(mode="after")
    def _sampling(self) -> QueueSpec:
        if bool(self.stratify_by) != (self.per_stratum is not None):
            raise ValueError("stratify_by and per_stratum go together")
        if self.feed is not None and (self.stratify_by or self.sample_rate != 1.0):
            raise ValueError("feed: a fed queue samples per side; no stratify_by or sample_rate")
        names = [f.name for f in self.fields]
        if len(set(names)) != len(names):
            raise ValueError("fields: a field name is given twice")
        return self

    @property
    def seed(self) -> str:
        return f"queue:{self.name}"

    def field(self, name: str) -> LabelField | None:
        return next((f for f in self.fields if f.name == name), None)


class TrustRule(BaseModel):
    """An evaluator version's scores of `metric` may decide a gate only when their agreement
    with the human labels (kappa / weighted kappa / Pearson r, by the field's kind) is at least
    `min_agreement` on at least `min_items` labelled responses."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    metric: Name
    min_agreement: Annotated[float, Field(ge=-1, le=1)]
    min_items: Annotated[int, Field(ge=1, le=100_000)] = 20
    enforce: bool = True
    """Off: below-threshold evaluators are only flagged; on: the gate also refuses them."""


class ReviewConfig(BaseModel):
    model_config = ConfigDict(frozen=True)
    queues: list[QueueSpec] = []
    trust: list[TrustRule] = []

    def fields_by_metric(self) -> dict[str, LabelField]:
        return {f.name: f for q in self.queues for f in q.fields}


def content_hash(item: BaseModel) -> str:
    canonical = json.dumps(item.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def validate(doc: Any, lines: Lines | None = None) -> ReviewConfig:
    """`{"queues": [...], "trust": [...]}` → config; every problem named by field and line."""
    lines = lines or {}
    if not isinstance(doc, dict):
        raise ConfigInvalid([Problem("(file)", "expected `queues: [...]` and/or `trust: [...]`")])
    found: list[Problem] = [
        problem(lines, (k,), "unknown top-level field")
        for k in sorted(set(doc) - {"queues", "trust"})
    ]
    parsed: dict[str, list[Any]] = {"queues": [], "trust": []}
    for section, model in (("queues", QueueSpec), ("trust", TrustRule)):
        items = doc.get(section, [])
        if not isinstance(items, list):
            found.append(problem(lines, (section,), "expected a list"))
            continue
        for i, item in enumerate(items):
            try:
                parsed[section].append(model.model_validate(item))
            except ValidationError as exc:
                found += problems(lines, (section, i), exc)
    seen: dict[str, int] = {}
    schemas: dict[str, tuple[str, str]] = {}
    for i, q in enumerate(parsed["queues"]):
        if q.name in seen:
            found.append(problem(lines, ("queues", i, "name"), f"{q.name!r} is defined twice"))
        seen[q.name] = i
        for j, f in enumerate(q.fields):
            other = schemas.setdefault(f.name, (q.name, f.schema_hash()))
            if other[1] != f.schema_hash():
                found.append(
                    problem(
                        lines,
                        ("queues", i, "fields", j),
                        f"metric {f.name!r} has another label schema in queue {other[0]!r};"
                        " one metric, one schema",
                    )
                )
    metrics = {f.name for q in parsed["queues"] for f in q.fields}
    rules: set[str] = set()
    for i, r in enumerate(parsed["trust"]):
        if r.metric in rules:
            found.append(problem(lines, ("trust", i, "metric"), f"{r.metric!r} has two rules"))
        if r.metric not in metrics and len(parsed["queues"]) == len(doc.get("queues") or []):
            found.append(
                problem(
                    lines,
                    ("trust", i, "metric"),
                    f"no queue labels {r.metric!r}: agreement needs human labels of it",
                )
            )
        rules.add(r.metric)
    if found:
        raise ConfigInvalid(found)
    return ReviewConfig(queues=parsed["queues"], trust=parsed["trust"])


def load_yaml(path: Path) -> ReviewConfig:
    doc, lines = read_yaml(path)
    return validate(doc, lines)


def from_stored(rows: Sequence[Mapping[str, Any]]) -> ReviewConfig:
    """The config as stored (rows of review_config, removed ones left out)."""
    live = [r for r in rows if not r["removed"]]
    return ReviewConfig(
        queues=[
            QueueSpec.model_validate_json(r["definition"]) for r in live if r["section"] == "queue"
        ],
        trust=[
            TrustRule.model_validate_json(r["definition"]) for r in live if r["section"] == "trust"
        ],
    )
