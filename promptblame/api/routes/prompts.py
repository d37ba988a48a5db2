"""Prompt registry: register a version's template once; re-registering other text is a 409.

Prompt ids and versions are the app's own names and may hold any text the ingest accepts for
them: "/" ("support/answer", "release/2026-11"; Starlette routes the decoded path, so %2F is a
"/" too) and even newlines. The path parameters take all of it (the version is what follows the
last "/versions/").
"""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any

from fastapi import Path, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from promptblame.api.errors import ErrorBody
from promptblame.api.json_body import json_router
from promptblame.api.params import TEXT
from promptblame.api.state import AdminKey, AppKey, IngestKey, ReadKey, State
from promptblame.errors import NotFound
from promptblame.ingest.contracts import PromptVersionIn
from promptblame.releases import labels
from promptblame.releases.resolve import Miss, resolve

router = json_router(prefix="/v1/prompts", tags=["prompts"])

PathName = Annotated[str, Path(min_length=1, max_length=256)]
LabelName = Annotated[str, Path(min_length=1, max_length=64)]
Name = Annotated[str, Field(min_length=1, max_length=256)]
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "no such prompt or label in this key's project", "model": ErrorBody}
}


class LabelMoveIn(BaseModel):
    """Move a label: compare-and-set when `expected` is given."""

    model_config = ConfigDict(extra="forbid")
    version: Name = Field(description="registered version the label will point to")
    model: Name | None = Field(None, description="only for this model; default: every model")
    expected: Annotated[str, Field(max_length=256)] | None = Field(
        None, description="version the label holds now ('' = it must not exist); else 409"
    )
    reason: Annotated[str, Field(max_length=2000)] = ""
    force: bool = Field(
        False, description="move a protected label to a version without a passing gate result"
    )


@router.put(
    f"/{{prompt_id:{TEXT}}}/versions/{{version:{TEXT}}}",
    responses={
        201: {"description": "registered now"},
        409: {"description": "this version is registered with other text", "model": ErrorBody},
    },
)
def put_version(
    prompt_id: PathName, version: PathName, body: PromptVersionIn, state: State, key: IngestKey
) -> JSONResponse:
    """201 when registered now, 200 when the same text was already registered."""
    row, new = labels.register(
        state.store,
        key.project_id,
        prompt_id,
        version,
        body.template,
        author=body.author,
        tags=body.labels,  # descriptive tags kept with the version, not movable labels
    )
    return JSONResponse(_public(row), status_code=201 if new else 200)


@router.get(f"/{{prompt_id:{TEXT}}}/versions")
def list_versions(prompt_id: PathName, state: State, key: ReadKey) -> dict[str, Any]:
    rows = state.store.list_prompt_versions(key.project_id, prompt_id)
    return {"prompt_id": prompt_id, "versions": [_public(r) for r in rows]}


@router.put(
    f"/{{prompt_id:{TEXT}}}/labels/{{label}}",
    responses={
        409: {"description": "the label does not hold `expected`", "model": ErrorBody},
        422: {"description": "bad name, unregistered version, protected label", "model": ErrorBody},
    },
)
def put_label(
    prompt_id: PathName, label: LabelName, body: LabelMoveIn, state: State, key: AdminKey
) -> dict[str, Any]:
    """Point `label` (for `model`, or by default) at `version`; recorded in the history."""
    move = labels.Move(
        prompt_id=prompt_id,
        label=label,
        version=body.version,
        model=body.model or "",
        expected=body.expected,
        reason=body.reason,
        force=body.force,
        key_id=key.key_id,
    )
    try:
        return labels.move(state.store, key.project_id, move, protected=state.settings.protected())
    finally:
        state.releases.invalidate(key.project_id, prompt_id)


@router.get(f"/{{prompt_id:{TEXT}}}/labels", responses=_NOT_FOUND)
def list_labels(prompt_id: PathName, state: State, key: ReadKey) -> dict[str, Any]:
    """Each label's current version, per model where a model has its own."""
    rows = labels.pointers(state.store, key.project_id, prompt_id)
    if not rows and not state.store.list_prompt_versions(key.project_id, prompt_id):
        raise NotFound(f"no prompt {prompt_id!r}")
    protected = state.settings.protected()
    return {"prompt_id": prompt_id, "labels": [labels.public(r, protected) for r in rows]}


@router.get(f"/{{prompt_id:{TEXT}}}/labels/{{label}}/history", responses=_NOT_FOUND)
def label_history(
    prompt_id: PathName, label: LabelName, state: State, key: ReadKey
) -> dict[str, Any]:
    """Every move of the label (all its model pointers), oldest first."""
    labels.check_label(label)
    rows = state.store.label_history(key.project_id, prompt_id, label)
    if not rows:
        raise NotFound(f"prompt {prompt_id!r} has no label {label!r}")
    protected = state.settings.protected()
    rows.sort(key=lambda r: (r["claimed_at"], r["seq"]))
    return {
        "prompt_id": prompt_id,
        "label": label,
        "moves": [labels.public(r, protected) for r in rows],
    }


@router.get(f"/{{prompt_id:{TEXT}}}/resolve", responses=_NOT_FOUND)
async def resolve_prompt(
    prompt_id: PathName,
    state: State,
    key: AppKey,
    label: Annotated[str, Query(min_length=1, max_length=64)] = "production",
    model: Annotated[str, Query(max_length=256)] = "",
    unit: Annotated[str, Query(max_length=256)] = "",
) -> dict[str, Any]:
    """The version a label serves to a model, with its template: what an app fetches per call
    (an ingest or a read key). Answered in the event loop from the process's cache; only a miss
    reads the store, in the thread pool."""
    answer = partial(
        resolve, state.releases, key.project_id, prompt_id, label=label, model=model, unit=unit
    )
    try:
        return answer(block=False)
    except Miss:
        return await run_in_threadpool(answer)


def _public(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "created_at": row["created_at"].isoformat()}
