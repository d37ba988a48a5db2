"""Incidents (shifts found by the detection job, with their verdicts), alert rules and alerts."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import Body, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from promptblame.analysis.alerting.catalog import apply, listing
from promptblame.analysis.alerting.rules import validate
from promptblame.analysis.detection import coverage
from promptblame.api.errors import ErrorBody
from promptblame.api.json_body import json_router
from promptblame.api.params import EARLIEST, Instant
from promptblame.api.state import AdminKey, ReadKey, State
from promptblame.errors import InvalidArgument, NotFound
from promptblame.releases import incident as release

router = json_router(prefix="/v1", tags=["incidents"])

IncidentId = Annotated[str, Path(min_length=1, max_length=64)]
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "no such incident in this key's project", "model": ErrorBody}
}


class StatusNote(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: Annotated[str, Field(max_length=2000)] = ""


def public(row: dict[str, Any], *, evidence: bool = False) -> dict[str, Any]:
    """Datetimes as ISO 8601; the evidence (a stored JSON text) parsed, or left out of lists."""
    out = {k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}
    if "evidence" in out:
        out["evidence"] = json.loads(out["evidence"]) if evidence else None
        if not evidence:
            del out["evidence"]
    return out


@router.get("/incidents")
def list_incidents(
    state: State,
    key: ReadKey,
    status: Literal["open", "acknowledged", "resolved", ""] = "",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    rows = state.store.incidents(key.project_id, status=status, limit=limit)
    return {"incidents": [public(r) for r in rows]}


@router.get("/detection/coverage")
def detection_coverage(
    state: State,
    key: ReadKey,
    at: Annotated[
        Instant | None, Query(description="end of the window (default: now), ISO 8601")
    ] = None,
) -> dict[str, Any]:
    """Every scored series of the detection window: analysed (on which bucket width: a thin
    series gets coarser buckets) or not analysed, with the reason. Nothing is dropped
    silently."""
    if at is not None and at - timedelta(days=state.settings.detection_window_days) < EARLIEST:
        raise InvalidArgument("at", "the window before it must start after 1900-01-01 (UTC)")
    state.store.materialize_scores()
    return coverage(state.store, state.settings, key.project_id, now=at)


@router.get("/incidents/{incident_id}", responses=_NOT_FOUND)
def get_incident(incident_id: IncidentId, state: State, key: ReadKey) -> dict[str, Any]:
    """The incident with its evidence, every earlier verdict, and the alerts sent about it."""
    row = _incident(state, key.project_id, incident_id)
    revisions = state.store.incident_revisions(key.project_id, incident_id)
    alerts = state.store.alerts(key.project_id, incident_id=incident_id)
    return {
        **public(row, evidence=True),
        "release": release.release_info(state.store, key.project_id, row),
        "revisions": [public(r, evidence=True) for r in revisions],
        "alerts": [public(a) for a in alerts],
    }


@router.post("/incidents/{incident_id}/rollback", responses=_NOT_FOUND)
def rollback_incident(incident_id: IncidentId, state: State, key: AdminKey) -> dict[str, Any]:
    """Move every label serving the blamed prompt version back to its predecessor (recorded
    with this incident's id, which is then resolved); `moved` is empty and `message` says why
    when nothing could move."""
    row = _incident(state, key.project_id, incident_id)
    answer = release.rollback(state.store, key.project_id, row, key.key_id)
    for m in answer["moved"]:
        state.releases.invalidate(key.project_id, m["prompt_id"])
    return answer


@router.post("/incidents/{incident_id}/ack", responses=_NOT_FOUND)
def ack_incident(
    incident_id: IncidentId, state: State, key: AdminKey, body: StatusNote | None = None
) -> dict[str, Any]:
    return _set_status(state, key.project_id, incident_id, "acknowledged", body)


@router.post("/incidents/{incident_id}/resolve", responses=_NOT_FOUND)
def resolve_incident(
    incident_id: IncidentId, state: State, key: AdminKey, body: StatusNote | None = None
) -> dict[str, Any]:
    """Resolved incidents get a "resolved" alert from rules that ask for one."""
    return _set_status(state, key.project_id, incident_id, "resolved", body)


@router.get("/alert-rules")
def get_alert_rules(state: State, key: ReadKey) -> dict[str, Any]:
    return listing(state.store, key.project_id)


@router.put("/alert-rules")
def put_alert_rules(
    state: State,
    key: AdminKey,
    doc: dict[str, Any] = Body(  # noqa: B008
        description='alerts.yaml as JSON: {"channels": [...], "rules": [...]}; replaces the set.'
    ),
    dry_run: bool = False,
) -> dict[str, Any]:
    changes = apply(state.store, key.project_id, validate(doc), dry_run=dry_run)
    return {"dry_run": dry_run, "changes": [asdict(c) for c in changes]}


@router.get("/alerts")
def get_alerts(
    state: State, key: ReadKey, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> dict[str, Any]:
    """Alerts sent or attempted, newest first, with delivery status and attempts."""
    return {"alerts": [public(a) for a in state.store.alerts(key.project_id, limit=limit)]}


def _incident(state: State, project_id: str, incident_id: str) -> dict[str, Any]:
    row = state.store.incident(project_id, incident_id)
    if row is None:
        raise NotFound(f"no incident {incident_id!r}")
    return row


def _set_status(
    state: State, project_id: str, incident_id: str, status: str, body: StatusNote | None
) -> dict[str, Any]:
    row = _incident(state, project_id, incident_id)
    row.update(
        project_id=project_id,
        status=status,
        status_note=body.note if body else "",
        updated_at=datetime.now(UTC),
    )
    state.store.insert_rows("incidents", [row])
    del row["project_id"]
    return public(row)
