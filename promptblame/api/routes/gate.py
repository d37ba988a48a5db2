"""POST /v1/gate: the CI gate's verdict on a candidate version's eval run, as JSON."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from promptblame.analysis.service import GateSpec, run_gate
from promptblame.api.errors import ErrorBody
from promptblame.api.json_body import json_router
from promptblame.api.state import ReadKey, State

router = json_router(prefix="/v1", tags=["gate"])

Name = Annotated[str, Field(min_length=1, max_length=256)]
Drop = Annotated[float, Field(ge=0, le=1e12, allow_inf_nan=False)]


class GateRequest(BaseModel):
    """Baseline vs candidate: two versions of one app, each by its eval run, paired by case_id."""

    model_config = ConfigDict(extra="forbid")
    app: Name
    baseline: Name = Field(description="baseline version (prompt version, model version or model)")
    candidate: Name = Field(description="candidate version, same kind as baseline")
    by: Literal["auto", "prompt_version", "model_version", "model"] = Field(
        "auto", description="which column the versions are in; auto: the first holding both"
    )
    environment: Name = "eval"
    baseline_run: Annotated[str, Field(max_length=256)] | None = Field(
        None, description="eval run (tag run_id); default: the version's newest run"
    )
    candidate_run: Annotated[str, Field(max_length=256)] | None = None
    metrics: list[Name] = Field(
        [], max_length=50, description="score names or response.* metrics; default: all scored"
    )
    max_drop: Drop = Field(0.02, description="allowed drop, in the metric's units")
    max_drop_per_metric: dict[Name, Drop] = Field({}, max_length=50)
    alpha: Annotated[float, Field(gt=0, lt=0.5)] = 0.05
    case_threshold: Drop | None = Field(
        None, description="how far a score case must move to be listed; default: automatic"
    )

    def spec(self) -> GateSpec:
        return GateSpec(**self.model_dump())


@router.post(
    "/gate",
    responses={
        404: {"description": "no eval responses for a side of the comparison", "model": ErrorBody}
    },
)
def gate(body: GateRequest, state: State, key: ReadKey) -> dict[str, Any]:
    """pass / fail / inconclusive per metric and overall, with the regressed cases named."""
    return run_gate(state.store, key.project_id, body.spec())
