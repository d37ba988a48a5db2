"""Guarded rollouts: start one, watch it, and pause, resume, abort or promote it by hand."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field

from promptblame.api.errors import ErrorBody
from promptblame.api.json_body import json_router
from promptblame.api.state import AdminKey, ReadKey, State
from promptblame.releases import rollouts
from promptblame.releases.rollouts import RolloutIn

router = json_router(prefix="/v1/rollouts", tags=["rollouts"])

RolloutId = Annotated[str, Path(min_length=1, max_length=600)]
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "no such rollout in this key's project", "model": ErrorBody},
    409: {"description": "the rollout's state does not allow this", "model": ErrorBody},
}


class Note(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: Annotated[str, Field(max_length=2000)] = ""


@router.post(
    "",
    status_code=201,
    responses={
        404: {"description": "the label does not exist", "model": ErrorBody},
        409: {"description": "a rollout is already active on the label", "model": ErrorBody},
    },
)
def start_rollout(body: RolloutIn, state: State, key: AdminKey) -> dict[str, Any]:
    """Start splitting the label's traffic: the first step's share goes to the candidate."""
    st = rollouts.start(
        state.store,
        key.project_id,
        body,
        key_id=key.key_id,
        protected=state.settings.protected(),
    )
    state.releases.invalidate(key.project_id, body.prompt_id)
    return rollouts.public(state.store, key.project_id, st)


@router.get("")
def list_rollouts(state: State, key: ReadKey) -> dict[str, Any]:
    states = state.store.rollout_states(key.project_id)
    states.sort(key=lambda s: s["claimed_at"], reverse=True)
    return {"rollouts": [rollouts.public(state.store, key.project_id, s) for s in states]}


@router.get("/{rollout_id}", responses=_NOT_FOUND)
def get_rollout(rollout_id: RolloutId, state: State, key: ReadKey) -> dict[str, Any]:
    """State, step, responses per arm, each guardrail's always-valid estimate now, what the
    next look would do, and the decision log."""
    st = rollouts.get(state.store, key.project_id, rollout_id)
    return rollouts.public(state.store, key.project_id, st, live=True)


@router.post("/{rollout_id}/{action}", responses=_NOT_FOUND)
def act_on_rollout(
    rollout_id: RolloutId,
    action: Literal["pause", "resume", "abort", "promote"],
    state: State,
    key: AdminKey,
    body: Note | None = None,
) -> dict[str, Any]:
    """pause (keep the split, stop advancing), resume, abort (the incumbent takes all traffic
    again), promote (the label moves to the candidate now)."""
    st = rollouts.act(
        state.store, key.project_id, rollout_id, action, key_id=key.key_id,
        note=body.note if body else "",
    )  # fmt: skip
    state.releases.invalidate(key.project_id, st["prompt_id"])
    return rollouts.public(state.store, key.project_id, st)
