"""Prompt registry: register a version's template once; re-registering other text is a 409.

Prompt ids and versions are the app's own names and may hold any text the ingest accepts for
them: "/" ("support/answer", "release/2026-11"; Starlette routes the decoded path, so %2F is a
"/" too) and even newlines. The path parameters take all of it (the version is what follows the
last "/versions/").
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Path
from fastapi.responses import JSONResponse

from promptblame.api.errors import ErrorBody
from promptblame.api.json_body import json_router
from promptblame.api.params import TEXT
from promptblame.api.state import IngestKey, ReadKey, State
from promptblame.errors import Conflict
from promptblame.ingest.contracts import PromptVersionIn

router = json_router(prefix="/v1/prompts", tags=["prompts"])

PathName = Annotated[str, Path(min_length=1, max_length=256)]


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
    digest = hashlib.sha256(body.template.encode()).hexdigest()
    existing = state.store.get_prompt_version(key.project_id, prompt_id, version)
    if existing is not None:
        if existing["content_hash"] != digest:
            raise Conflict(
                f"prompt {prompt_id!r} version {version!r} is already registered with different"
                f" text (sha256 {existing['content_hash'][:12]}…); register a new version"
            )
        return JSONResponse(_public(existing), status_code=200)
    state.store.put_prompt_version(
        key.project_id,
        prompt_id=prompt_id,
        version=version,
        template=body.template,
        content_hash=digest,
        author=body.author,
        labels=body.labels,
        created_at=datetime.now(UTC),
    )
    stored = state.store.get_prompt_version(key.project_id, prompt_id, version)
    assert stored is not None
    return JSONResponse(_public(stored), status_code=201)


@router.get(f"/{{prompt_id:{TEXT}}}/versions")
def list_versions(prompt_id: PathName, state: State, key: ReadKey) -> dict[str, Any]:
    rows = state.store.list_prompt_versions(key.project_id, prompt_id)
    return {"prompt_id": prompt_id, "versions": [_public(r) for r in rows]}


def _public(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "created_at": row["created_at"].isoformat()}
