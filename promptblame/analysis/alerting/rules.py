"""alerts.yaml: channels (a generic JSON webhook or a Slack incoming webhook) and rules that say
which incidents go where.

A rule matches an incident by metric, scope (app/route/environment), direction, verdict and
size: |effect| >= min_effect and, for a culprit, p-value <= 1 - confidence. An
`insufficient_evidence` incident without a detected shift (reason `arrival_underpowered`: a
version went out on too little traffic for its test to exclude a small effect) is a notice, not
an alarm: a rule sends it only with `unverified_arrivals: true`. An `insufficient_evidence`
verdict on a detected shift (the metric moved; a version in it is not excluded) is sent by
default, like the other verdicts. A rule with
`rollback: true` (off by default; regressions blamed on a culprit only) also rolls back what it
matches: the labels serving the culprit prompt version go back to its predecessor.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, ValidationError

from promptblame.configfile import Lines, Scope, problem, problems, read_yaml
from promptblame.errors import ConfigInvalid, Problem

Name = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")]
Verdict = Literal["culprit", "confounded", "insufficient_evidence", "no_version_cause"]


class Channel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Name
    kind: Literal["webhook", "slack"]
    url: AnyHttpUrl
    headers: dict[str, str] = Field(default_factory=dict)  # webhook only (e.g. an auth token)


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Name
    metric: Annotated[str, Field(min_length=1, max_length=128)] = "*"  # "*": any metric
    filter: Scope = Scope()
    direction: Literal["regression", "improvement", "any"] = "regression"
    verdicts: Annotated[list[Verdict], Field(min_length=1)] = [
        "culprit",
        "confounded",
        "insufficient_evidence",
        "no_version_cause",
    ]
    min_effect: Annotated[float, Field(ge=0)] = 0.0
    confidence: Annotated[float, Field(gt=0, lt=1)] = 0.95
    channels: Annotated[list[Name], Field(min_length=1)]
    cooldown_minutes: Annotated[float, Field(ge=0)] = 60.0
    notify_resolved: bool = True
    unverified_arrivals: bool = Field(
        False,
        description="also send insufficient_evidence incidents where no shift was detected"
        " (a version arrived on too little traffic to tell whether it changed the metric)",
    )
    rollback: bool = Field(
        False,
        description="also roll back: move the labels serving a matching regression's culprit"
        " prompt version to its predecessor (as POST /v1/incidents/{id}/rollback)",
    )

    def matches(self, incident: dict[str, Any]) -> bool:
        """`incident`: a stored incident row (app, route, environment, metric, direction,
        verdict, effect, p_value)."""
        f = self.filter
        return (
            self.metric in ("*", incident["metric"])
            and (not f.app or incident["app"] in f.app)
            and (not f.route or incident["route"] in f.route)
            and (not f.environment or incident["environment"] in f.environment)
            and self.direction in ("any", incident["direction"])
            and incident["verdict"] in self.verdicts
            and abs(incident["effect"]) >= self.min_effect
            and (incident["verdict"] != "culprit" or incident["p_value"] <= 1 - self.confidence)
            and (self.unverified_arrivals or not unverified_arrival(incident))
        )


def unverified_arrival(incident: dict[str, Any]) -> bool:
    """An `insufficient_evidence` incident with no detected shift behind it (its evidence's
    reason is `arrival_underpowered`)."""
    if incident["verdict"] != "insufficient_evidence":
        return False
    try:
        evidence = json.loads(incident.get("evidence") or "{}")
    except ValueError:
        return False
    return isinstance(evidence, dict) and evidence.get("reason") == "arrival_underpowered"


class AlertConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    channels: list[Channel] = []
    rules: list[Rule] = []

    def content_hash(self, section: str, name: str) -> str:
        items = self.channels if section == "channel" else self.rules
        item = next(i for i in items if i.name == name)
        canonical = json.dumps(item.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def validate(doc: Any, lines: Lines | None = None) -> AlertConfig:
    """`{"channels": [...], "rules": [...]}` → config; problems named by field and line."""
    lines = lines or {}
    if not isinstance(doc, dict):
        raise ConfigInvalid([Problem("(file)", "expected `channels:` and `rules:`", 1)])
    try:
        config = AlertConfig.model_validate(doc)
    except ValidationError as exc:
        raise ConfigInvalid(problems(lines, (), exc)) from None
    found: list[Problem] = []
    for section, names in (
        ("channels", [c.name for c in config.channels]),
        ("rules", [r.name for r in config.rules]),
    ):
        for i, name in enumerate(names):
            if name in names[:i]:
                found.append(problem(lines, (section, i, "name"), f"{name!r} is defined twice"))
    for i, rule in enumerate(config.rules):
        if rule.rollback and (rule.direction != "regression" or rule.verdicts != ["culprit"]):
            found.append(
                problem(
                    lines,
                    ("rules", i, "rollback"),
                    "a rollback rule needs direction: regression and verdicts: [culprit]",
                )
            )
    channel_names = {c.name for c in config.channels}
    for i, rule in enumerate(config.rules):
        for j, ch in enumerate(rule.channels):
            if ch not in channel_names:
                found.append(problem(lines, ("rules", i, "channels", j), f"no channel {ch!r}"))
    if found:
        raise ConfigInvalid(found)
    return config


def load_yaml(path: Path) -> AlertConfig:
    doc, lines = read_yaml(path)
    return validate(doc, lines)
