"""Incidents: a detected shift with its verdict, deduplicated across detection runs.

Pure: `merge` takes the incidents already stored for one series and the verdicts found now, and
returns the rows to write. The same shift found again (same direction, within `tolerance`
buckets, same or overlapping route) is the same incident, and so is a culprit already blamed
in an open incident of the series and scope (a staged rollout's later step: one incident per
version and metric); a changed verdict or culprit (late
scores can change the picture) becomes a new revision, the old one kept in the history. A
rollback resolves the incident of the version it undoes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from promptblame.analysis.attribution import Verdict

REPORTABLE = ("culprit", "confounded", "insufficient_evidence", "no_version_cause")


@dataclass(frozen=True)
class Series:
    project_id: str
    app: str
    metric: str
    source: str
    bucket_seconds: int


@dataclass
class Writes:
    incidents: list[dict[str, Any]] = field(default_factory=list)  # new or changed rows
    revisions: list[dict[str, Any]] = field(default_factory=list)
    opened: int = 0
    revised: int = 0
    resolved: int = 0


def describe(v: Verdict, route: str) -> dict[str, Any]:
    """The incident fields a verdict decides."""
    e = v.culprit
    if v.kind == "culprit" and e is not None:
        culprit = f"{e.dimension} {e.value}"
        effect, p = e.effect, e.p_adjusted if e.p_adjusted is not None else e.p_value
        route = e.scope_route or route
        environment = e.scope_environment or ""
    else:
        # confounded: the versions that changed together; insufficient evidence: the version
        # that is neither blamed nor excluded
        tied = [c for c in v.candidates if c.status in ("not_separable", "not_excluded")][:2]
        culprit = " + ".join(f"{c.dimension} {c.value}" for c in tied) if tied else ""
        effect, p, environment = v.aggregate_effect, v.detector_p_value, ""
    return {
        "route": route,
        "environment": environment,
        "direction": v.direction or "regression",
        "verdict": v.kind,
        "culprit": culprit,
        "summary": v.summary,
        "effect": float(effect) if effect is not None else 0.0,
        "p_value": float(p) if p is not None else 1.0,
        "evidence": json.dumps(v.as_dict()),
    }


def merge(
    series: Series,
    existing: list[dict[str, Any]],
    found: list[tuple[str, Verdict]],
    *,
    now: datetime,
    tolerance: int = 2,
) -> Writes:
    """`found`: (route the series was cut to, "" for all routes; verdict) of this run."""
    out = Writes()
    near = timedelta(seconds=tolerance * series.bucket_seconds)
    current = [dict(r) for r in existing]
    for route, v in found:
        if v.kind not in REPORTABLE or not isinstance(v.start, datetime):
            continue
        fields = describe(v, route)
        match = next(
            (
                r
                for r in current
                if r["direction"] == fields["direction"]
                and abs(r["shift_start"] - v.start) <= near
                and (not r["route"] or not fields["route"] or r["route"] == fields["route"])
            ),
            None,
        )
        if match is None and v.kind == "culprit" and fields["culprit"]:
            # the same culprit is never blamed in two open incidents of one series (metric,
            # source) and scope: a later step of its rollout is the same incident
            match = next(
                (
                    r
                    for r in current
                    if r["status"] != "resolved"
                    and r["verdict"] == "culprit"
                    and r["culprit"] == fields["culprit"]
                    and r["direction"] == fields["direction"]
                    and r["route"] == fields["route"]
                    and r["environment"] == fields["environment"]
                ),
                None,
            )
        if match is None:
            row = {
                "project_id": series.project_id,
                "incident_id": _incident_id(series, fields["route"], v.start),
                "app": series.app,
                "metric": series.metric,
                "source": series.source,
                "bucket_seconds": series.bucket_seconds,
                "shift_start": v.start,
                **fields,
                "status": "open",
                "status_note": "",
                "revision": 1,
                "created_at": now,
                "updated_at": now,
            }
            current.append(row)
            out.opened += 1
        elif (match["verdict"], match["culprit"]) != (fields["verdict"], fields["culprit"]):
            row = {**match, **fields, "project_id": series.project_id}
            row["revision"] = match["revision"] + 1
            row["updated_at"] = now
            match.update(row)
            out.revised += 1
        else:
            continue
        out.incidents.append(row)
        out.revisions.append(_revision(row, now))
        undone = _rolled_back(current, row, v)
        if undone is not None:
            undone.update(
                project_id=series.project_id,
                status="resolved",
                status_note=f"rolled back: {row['culprit']} returned"
                f" at {v.start:%Y-%m-%d %H:%M} UTC",
                updated_at=now,
            )
            out.incidents.append(undone)
            out.resolved += 1
    return out


def _rolled_back(
    current: list[dict[str, Any]], row: dict[str, Any], v: Verdict
) -> dict[str, Any] | None:
    """The open incident whose culprit this rollback undoes."""
    e = v.culprit
    if v.kind != "culprit" or e is None or not e.rollback:
        return None
    undone = f"{e.dimension} {e.predecessor}"
    for r in current:
        if (
            r is not row
            and r["status"] != "resolved"
            and r["culprit"] == undone
            and r["direction"] != row["direction"]
            and r["shift_start"] < row["shift_start"]
        ):
            return r
    return None


_REVISION_KEYS = [
    "project_id",
    "incident_id",
    "revision",
    "verdict",
    "culprit",
    "summary",
    "effect",
    "p_value",
    "evidence",
]


def _revision(row: dict[str, Any], now: datetime) -> dict[str, Any]:
    return {**{k: row[k] for k in _REVISION_KEYS}, "created_at": now}


def _incident_id(series: Series, route: str, start: datetime) -> str:
    key = "\x1f".join(
        [series.project_id, series.app, route, series.metric, series.source, start.isoformat()]
    )
    return hashlib.sha256(key.encode()).hexdigest()[:16]
