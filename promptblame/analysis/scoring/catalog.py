"""The stored evaluator set of a project: apply a config (all or nothing) and list it."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from promptblame.analysis.scoring.config import Change, EvaluatorSpec, plan
from promptblame.analysis.scoring.registry import build, parse_params, source_of
from promptblame.errors import ConfigInvalid, Problem
from promptblame.settings import Settings
from promptblame.store import Store


def apply(
    store: Store,
    project_id: str,
    specs: Sequence[EvaluatorSpec],
    settings: Settings,
    *,
    dry_run: bool = False,
) -> list[Change]:
    """Make the project's evaluators equal to `specs`; returns what changed (or would).

    Every evaluator is built first (judge endpoint configured, custom module allowed), so a
    config that cannot run is refused whole, before anything is written.
    """
    problems = []
    for i, spec in enumerate(specs):
        try:
            build(spec.kind, parse_params(spec.kind, spec.params), settings).close()
        except ValueError as exc:
            problems.append(Problem(f"evaluators.{i}.params", str(exc)))
    if problems:
        raise ConfigInvalid(problems)
    current = {r["name"]: r for r in store.evaluators(project_id)}
    versions: dict[str, dict[str, int]] = {}
    for v in store.evaluator_versions(project_id):
        versions.setdefault(v["name"], {})[v["content_hash"]] = int(v["version"])
    changes = plan(specs, current, versions)
    if dry_run:
        return changes
    now = datetime.now(UTC)
    by_name = {s.name: s for s in specs}
    for c in changes:
        if c.action == "unchanged":
            continue
        if c.action == "remove":
            store.put_evaluator(
                project_id, {**current[c.name], "removed": 1, "updated_at": now}, new_version=False
            )
            continue
        spec = by_name[c.name]
        h = spec.content_hash()
        params = parse_params(spec.kind, spec.params).model_dump(mode="json")
        row = {
            "name": spec.name,
            "version": c.version,
            "kind": spec.kind,
            "params": json.dumps(params, sort_keys=True),
            "content_hash": h,
            "filter": json.dumps(spec.filter.model_dump()),
            "sample_rate": spec.sample_rate,
            "enabled": spec.enabled,
            "description": spec.description,
            "removed": 0,
            "updated_at": now,
        }
        store.put_evaluator(project_id, row, new_version=h not in versions.get(spec.name, {}))
    return changes


def listing(store: Store, project_id: str, settings: Settings) -> list[dict[str, Any]]:
    """The project's evaluators as `GET /v1/evaluators` shows them, with the score source each
    writes and every version it has had."""
    history: dict[str, list[dict[str, Any]]] = {}
    for v in store.evaluator_versions(project_id):
        history.setdefault(v["name"], []).append(
            {
                "version": v["version"],
                "content_hash": v["content_hash"],
                "created_at": v["created_at"],
            }
        )
    out = []
    for r in store.evaluators(project_id):
        if r["removed"]:
            continue
        params = json.loads(r["params"])
        source = source_of(r["name"], r["version"], parse_params(r["kind"], params), settings)
        out.append(
            {
                "name": r["name"],
                "kind": r["kind"],
                "version": r["version"],
                "source": source,
                "params": params,
                "filter": json.loads(r["filter"]),
                "sample_rate": r["sample_rate"],
                "enabled": bool(r["enabled"]),
                "description": r["description"],
                "updated_at": r["updated_at"],
                "versions": history.get(r["name"], []),
            }
        )
    return out
