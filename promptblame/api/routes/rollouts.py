"""Guarded rollouts and live experiments: start one, watch it, and pause, resume, abort or
promote it by hand."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field

from promptblame.api.errors import ErrorBody
from promptblame.api.json_body import json_router
from promptblame.api.state import AdminKey, ReadKey, State
from promptblame.releases import rollouts
from promptblame.releases.rollouts import ExperimentIn, RolloutIn

router = json_router(tags=["rollouts"])

RolloutId = Annotated[str, Path(min_length=1, max_length=600)]
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "no such rollout in this key's project", "model": ErrorBody},
    409: {"description": "the rollout's state does not allow this", "model": ErrorBody},
}


class Note(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: Annotated[str, Field(max_length=2000)] = ""


_STARTS: dict[int | str, dict[str, Any]] = {
    404: {"description": "the label does not exist", "model": ErrorBody},
    409: {"description": "a rollout is already active on the label", "model": ErrorBody},
}


@router.post("/v1/rollouts", status_code=201, responses=_STARTS)
def start_rollout(body: RolloutIn, state: State, key: AdminKey) -> dict[str, Any]:
    """Start splitting the label's traffic: the first step's share goes to the candidate."""
    return _start(body, state, key)


@router.post("/v1/experiments", status_code=201, responses=_STARTS)
def start_experiment(body: ExperimentIn, state: State, key: AdminKey) -> dict[str, Any]:
    """Serve several variants of a prompt on a label at a fixed split, watched like a rollout's
    step (SRM pauses it, a regressed guardrail ends it) but never promoted automatically.
    Responses carry experiment = its id and variant = the version; `GET /v1/experiments/{id}`
    compares them (control: the label's version, always-valid by default). Pause, resume or
    end it under `/v1/rollouts/{id}/`."""
    return _start(body, state, key)


def _start(body: RolloutIn | ExperimentIn, state: State, key: AdminKey) -> dict[str, Any]:
    st = rollouts.start(
        state.store,
        key.project_id,
        body,
        key_id=key.key_id,
        protected=state.settings.protected(),
    )
    state.releases.invalidate(key.project_id, body.prompt_id)
    return rollouts.public(state.store, key.project_id, st)


@router.get("/v1/rollouts")
def list_rollouts(state: State, key: ReadKey) -> dict[str, Any]:
    states = state.store.rollout_states(key.project_id)
    states.sort(key=lambda s: s["claimed_at"], reverse=True)
    return {"rollouts": [rollouts.public(state.store, key.project_id, s) for s in states]}


@router.get("/v1/rollouts/{rollout_id}", responses=_NOT_FOUND)
def get_rollout(rollout_id: RolloutId, state: State, key: ReadKey) -> dict[str, Any]:
    """State, step, responses per arm, each guardrail's always-valid estimate now, what the
    next look would do, and the decision log."""
    st = rollouts.get(state.store, key.project_id, rollout_id)
    return rollouts.public(state.store, key.project_id, st, live=True)


@router.post("/v1/rollouts/{rollout_id}/{action}", responses=_NOT_FOUND)
def act_on_rollout(
    rollout_id: RolloutId,
    action: Literal["pause", "resume", "abort", "promote"],
    state: State,
    key: AdminKey,
    body: Note | None = None,
) -> dict[str, Any]:
    """pause (keep the split, stop advancing), resume, abort (the incumbent takes all traffic
    again), promote (the label moves to the candidate now; experiments have no promotion)."""
    st = rollouts.act(
        state.store, key.project_id, rollout_id, action, key_id=key.key_id,
        note=body.note if body else "",
    )  # fmt: skip
    state.releases.invalidate(key.project_id, st["prompt_id"])
    return rollouts.public(state.store, key.project_id, st)
