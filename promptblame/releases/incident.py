"""Rollback from an incident: move every label serving the blamed prompt version back to the
predecessor the incident names, recorded with the incident id."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from promptblame.errors import Conflict
from promptblame.releases.labels import Move, move, pointers
from promptblame.store import Store


@dataclass(frozen=True)
class Culprit:
    prompt_id: str
    version: str
    predecessor: str  # version of the same prompt, or '' when the incident names none usable
    value: str  # as the incident names it: "answer@v4"


@dataclass
class Plan:
    """What a rollback of an incident would do now, or why it cannot."""

    culprit: Culprit | None
    serving: list[dict[str, Any]] = field(default_factory=list)  # pointers holding the culprit
    reason: str = ""  # why nothing can move ('' when something can)


def plan(store: Store, project_id: str, incident: Mapping[str, Any]) -> Plan:
    raw = incident.get("evidence")  # stored JSON text, or already parsed (pages, API)
    evidence = raw if isinstance(raw, dict) else json.loads(raw) if raw else {}
    blamed = evidence.get("culprit") or {}
    if incident["verdict"] != "culprit" or not blamed:
        return Plan(None, reason=f"the verdict is {incident['verdict']}: no version is blamed")
    if blamed["dimension"] != "prompt":
        what = "a model" if blamed["dimension"] == "model" else "a prompt and model together"
        return Plan(
            None,
            reason=f"the culprit {blamed['value']} is {what}; labels move prompt versions only"
            " (switch the model in the app's configuration)",
        )
    serving = [
        p
        for p in pointers(store, project_id)
        if f"{p['prompt_id']}@{p['to_version']}" == blamed["value"]
    ]
    prompt_id = serving[0]["prompt_id"] if serving else blamed["value"].rpartition("@")[0]
    version = blamed["value"][len(prompt_id) + 1 :]
    pred_id, _, pred = str(blamed.get("predecessor", "")).rpartition("@")
    culprit = Culprit(prompt_id, version, pred if pred_id == prompt_id else "", blamed["value"])
    if not serving:
        return Plan(culprit, reason=f"no label serves {blamed['value']} now")
    if not culprit.predecessor:
        return Plan(
            culprit,
            serving,
            f"the predecessor {blamed.get('predecessor')!r} is not a version of {prompt_id!r}",
        )
    if store.get_prompt_version(project_id, prompt_id, culprit.predecessor) is None:
        return Plan(
            culprit,
            serving,
            f"the predecessor {prompt_id}@{culprit.predecessor} is not in the prompt registry"
            " (register its template to roll back to it)",
        )
    return Plan(culprit, serving)


def release_info(store: Store, project_id: str, incident: Mapping[str, Any]) -> dict[str, Any]:
    """Which labels serve the culprit now and how to roll back: for the incident API, alerts
    and pages."""
    p = plan(store, project_id, incident)
    iid = incident["incident_id"]
    return {
        "serving_labels": [
            {"prompt_id": s["prompt_id"], "label": s["label"], "model": s["model"] or None}
            for s in p.serving
        ],
        "rollback_to": p.culprit.predecessor if p.culprit and not p.reason else None,
        "rollback_possible": not p.reason,
        "why_not": p.reason or None,
        "how": None
        if p.reason
        else f"POST /v1/incidents/{iid}/rollback (admin key), or from the incident page",
    }


def rollback(
    store: Store, project_id: str, incident: Mapping[str, Any], key_id: str
) -> dict[str, Any]:
    """Move each label serving the culprit back to its predecessor (compare-and-set on the
    culprit: a label someone moved meanwhile is left alone and listed)."""
    iid = incident["incident_id"]
    p = plan(store, project_id, incident)
    answer: dict[str, Any] = {
        "incident_id": iid,
        "culprit": p.culprit.value if p.culprit else incident.get("culprit") or None,
        "rollback_to": p.culprit.predecessor if p.culprit else None,
        "moved": [],
        "skipped": [],
    }
    if p.reason:
        earlier = [e for e in store.label_history(project_id) if e["incident_id"] == iid]
        if earlier and not p.serving:
            done = ", ".join(
                f"{e['label']} {e['prompt_id']}@{e['from_version']} → {e['to_version']}"
                f" at {e['claimed_at']:%Y-%m-%d %H:%M} UTC"
                for e in earlier
            )
            p.reason = f"already rolled back by this incident ({done}); nothing left to move"
        return {**answer, "message": f"nothing moved: {p.reason}"}
    assert p.culprit is not None
    for s in p.serving:
        m = Move(
            prompt_id=s["prompt_id"],
            label=s["label"],
            model=s["model"],
            version=p.culprit.predecessor,
            expected=p.culprit.version,
            reason=f"rollback of incident {iid}: {p.culprit.value} regressed {incident['metric']}",
            key_id=key_id,
            incident_id=iid,
        )
        try:  # protected labels too: the incident is the evidence against what they serve
            answer["moved"].append(move(store, project_id, m, protected=frozenset()))
        except Conflict as exc:  # moved meanwhile, or a rollout owns the label
            answer["skipped"].append(
                {"label": s["label"], "model": s["model"] or None, "why": str(exc)}
            )
    if answer["moved"]:
        _resolve_incident(store, project_id, incident, answer["moved"])
    moved = ", ".join(
        f"{m['label']}{' (' + m['model'] + ')' if m['model'] else ''} {m['from']} → {m['to']}"
        for m in answer["moved"]
    )
    answer["message"] = (
        f"rolled back {p.culprit.value}: {moved}"
        if moved
        else "nothing moved: " + "; ".join(s["why"] for s in answer["skipped"])
    )
    return answer


def _resolve_incident(
    store: Store, project_id: str, incident: Mapping[str, Any], moved: list[dict[str, Any]]
) -> None:
    row = dict(incident)
    row.update(
        project_id=project_id,
        status="resolved",
        status_note="rolled back: "
        + ", ".join(f"{m['label']} {m['prompt_id']}@{m['from']} → {m['to']}" for m in moved),
        updated_at=datetime.now(UTC),
    )
    store.insert_rows("incidents", [row])
