"""The applied alert config of a project: apply alerts.yaml (all or nothing), read it back."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from promptblame.analysis.alerting.rules import AlertConfig
from promptblame.store import Store

SECTIONS = {"channel": "channels", "rule": "rules"}


Action = Literal["create", "update", "unchanged", "remove"]


@dataclass(frozen=True)
class Change:
    section: str  # channel | rule
    name: str
    action: Action


def current(store: Store, project_id: str) -> AlertConfig:
    doc: dict[str, list[Any]] = {"channels": [], "rules": []}
    for r in store.alert_config(project_id):
        if not r["removed"]:
            doc[SECTIONS[r["section"]]].append(json.loads(r["definition"]))
    return AlertConfig.model_validate(doc)


def apply(
    store: Store, project_id: str, config: AlertConfig, *, dry_run: bool = False
) -> list[Change]:
    stored = {(r["section"], r["name"]): r for r in store.alert_config(project_id)}
    now = datetime.now(UTC)
    changes: list[Change] = []
    rows: list[dict[str, Any]] = []
    wanted = set()
    for section, items in (("channel", config.channels), ("rule", config.rules)):
        for item in items:
            wanted.add((section, item.name))
            h = config.content_hash(section, item.name)
            old = stored.get((section, item.name))
            if old is not None and not old["removed"] and old["content_hash"] == h:
                changes.append(Change(section, item.name, "unchanged"))
                continue
            action: Action = "create" if old is None or old["removed"] else "update"
            changes.append(Change(section, item.name, action))
            definition = json.dumps(item.model_dump(mode="json"), sort_keys=True)
            rows.append(_row(project_id, section, item.name, definition, h, 0, now))
    for (section, name), old in sorted(stored.items()):
        if (section, name) not in wanted and not old["removed"]:
            changes.append(Change(section, name, "remove"))
            rows.append(
                _row(project_id, section, name, old["definition"], old["content_hash"], 1, now)
            )
    if rows and not dry_run:
        store.insert_rows("alert_config", rows)
    return changes


def listing(store: Store, project_id: str) -> dict[str, Any]:
    """Rules and channels as GET /v1/alert-rules shows them (webhook URLs and headers are
    secrets: only the host is shown)."""
    config = current(store, project_id)
    return {
        "rules": [r.model_dump(mode="json") for r in config.rules],
        "channels": [
            {"name": c.name, "kind": c.kind, "host": c.url.host, "headers": sorted(c.headers)}
            for c in config.channels
        ],
    }


def _row(
    project_id: str, section: str, name: str, definition: str, h: str, removed: int, now: datetime
) -> dict[str, Any]:
    return {
        "project_id": project_id,
        "section": section,
        "name": name,
        "definition": definition,
        "content_hash": h,
        "removed": removed,
        "updated_at": now,
    }
