"""Evaluators as config (PUT applies a whole set, GET lists it) and the scheduled jobs' state."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import Body

from promptblame.analysis.scoring.catalog import apply, listing
from promptblame.analysis.scoring.config import validate
from promptblame.api.json_body import json_router
from promptblame.api.state import AdminKey, ReadKey, State

router = json_router(prefix="/v1", tags=["scoring"])


@router.get("/evaluators")
def get_evaluators(state: State, key: ReadKey) -> dict[str, Any]:
    return {"evaluators": listing(state.store, key.project_id, state.settings)}


@router.put("/evaluators")
def put_evaluators(
    state: State,
    key: AdminKey,
    doc: dict[str, Any] = Body(  # noqa: B008
        description='The whole set, as in evaluators.yaml: {"evaluators": [...]}.'
        " Evaluators missing from it are removed (their scores and versions stay)."
    ),
    dry_run: bool = False,
) -> dict[str, Any]:
    """Apply a set (422 naming each bad field; nothing changes then). `dry_run` shows the
    changes without making them."""
    specs = validate(doc)
    changes = apply(state.store, key.project_id, specs, state.settings, dry_run=dry_run)
    return {"dry_run": dry_run, "changes": [asdict(c) for c in changes]}


@router.get("/jobs")
def get_jobs(state: State, key: ReadKey) -> dict[str, Any]:
    """Each scheduled job's last run: when, how long, status, rows processed, last error (the
    scoring job per project; store-wide jobs without project data)."""
    return {"jobs": state.store.last_job_runs(key.project_id)}
