"""Human review over JSON: queues as config, their items and labels, and evaluator agreement.

Labelling needs a key with the `review` (or `admin`) scope; a read key sees queues, labels and
agreement but cannot label. Reviewers are named by their key's name.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import Body, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from promptblame.api.auth import Principal
from promptblame.api.errors import ErrorBody
from promptblame.api.json_body import json_router
from promptblame.api.state import AdminKey, AppState, ReadKey, ReviewKey, State
from promptblame.review import calibration, queues
from promptblame.review.config import NAME, validate

router = json_router(prefix="/v1", tags=["review"])

_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "no such queue (or item of it) in this key's project", "model": ErrorBody}
}

Queue = Annotated[str, Path(min_length=1, max_length=64, pattern=NAME)]


def reviewer_name(state: AppState, key: Principal) -> str:
    """Who is labelling: the key's name (else its id); "local" without auth."""
    if state.settings.auth_disabled:
        return "local"
    record = state.store.get_api_key(key.key_id)
    return (record.name if record and record.name else "") or key.key_id


@router.get("/queues")
def get_queues(state: State, key: ReadKey) -> dict[str, Any]:
    """Every queue with its items, labels and progress, and the trust rules."""
    cfg = queues.current(state.store, key.project_id)
    out = []
    for q in cfg.queues:
        items = queues.items(state.store, key.project_id, q.name)
        out.append(
            {
                **q.model_dump(mode="json"),
                "items": len(items),
                "done": sum(len(i.labelled_by) >= i.needed for i in items),
                "labels": sum(len(i.labelled_by) for i in items),
                "overlap_items": sum(i.needed == 2 for i in items),
            }
        )
    return {"queues": out, "trust": [t.model_dump() for t in cfg.trust]}


@router.put("/queues")
def put_queues(
    state: State,
    key: AdminKey,
    doc: dict[str, Any] = Body(  # noqa: B008
        description='The whole review config, as in review.yaml: {"queues": [...], "trust":'
        " [...]}. Queues missing from it are removed (their labels and scores stay)."
    ),
    dry_run: bool = False,
) -> dict[str, Any]:
    """Apply the config (422 naming each bad field; nothing changes then) and fill the queues."""
    cfg = validate(doc)
    changes = queues.apply(state.store, key.project_id, cfg, dry_run=dry_run)
    return {"dry_run": dry_run, "changes": [asdict(c) for c in changes]}


@router.get("/queues/{queue}/items", responses=_NOT_FOUND)
def get_items(
    state: State,
    key: ReadKey,
    queue: Queue,
    refresh: Annotated[bool, Query(description="sample responses that arrived since")] = False,
) -> dict[str, Any]:
    spec = queues.queue_spec(state.store, key.project_id, queue)
    added = queues.refresh(state.store, key.project_id, spec) if refresh else 0
    items = queues.items(state.store, key.project_id, queue)
    return {"queue": queue, "added": added, "items": [asdict(i) for i in items]}


@router.get("/queues/{queue}/labels", responses=_NOT_FOUND)
def get_labels(state: State, key: ReadKey, queue: Queue) -> dict[str, Any]:
    queues.queue_spec(state.store, key.project_id, queue)
    return {"queue": queue, "labels": queues.labels(state.store, key.project_id, queue)}


class LabelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    event_id: Annotated[str, Field(min_length=1, max_length=256)]
    labels: dict[Annotated[str, Field(max_length=64)], Any] = Field(
        {}, max_length=20, description="field → answer: pass/fail, a scale step, a category"
    )
    comment: Annotated[str, Field(max_length=4000)] = ""
    skip: bool = False


@router.post("/queues/{queue}/labels", responses=_NOT_FOUND)
def post_label(state: State, key: ReviewKey, queue: Queue, body: LabelIn) -> dict[str, Any]:
    """Label (or skip) one item of the queue as this key's reviewer; a value outside the
    queue's schema is refused (422 naming `labels.<field>`)."""
    values = queues.submit(
        state.store,
        key.project_id,
        queue,
        event_id=body.event_id,
        reviewer=reviewer_name(state, key),
        key_id=key.key_id,
        labels=body.labels,
        comment=body.comment,
        skip=body.skip,
    )
    return {"queue": queue, "event_id": body.event_id, "skipped": body.skip, "labels": values}


@router.post("/queues/{queue}/labels/undo", responses=_NOT_FOUND)
def undo_label(state: State, key: ReviewKey, queue: Queue) -> dict[str, Any]:
    """Take back this reviewer's latest label or skip in the queue."""
    event_id = queues.undo(
        state.store, key.project_id, queue, reviewer=reviewer_name(state, key), key_id=key.key_id
    )
    return {"queue": queue, "undone": event_id}


@router.get("/agreement")
def get_agreement(
    state: State,
    key: ReadKey,
    metric: Annotated[str, Query(max_length=64)] = "",
) -> dict[str, Any]:
    """Per labelled metric: each evaluator version's agreement with the human labels (kappa,
    weighted kappa + Krippendorff's alpha, or Pearson r + mean bias, with 95 % CIs), its trust
    under the project's rule, and human–human agreement on the overlap."""
    return {"metrics": calibration.report(state.store, key.project_id, metric)}
