"""Pass/fail thresholds on what the app recorded: latency and cost."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from promptblame.analysis.scoring.base import Evaluator, Outcome, Params, Response


class LatencyParams(Params):
    max_ms: Annotated[float, Field(gt=0, allow_inf_nan=False)]


class Latency(Evaluator[LatencyParams]):
    kind = "latency"
    params_model = LatencyParams

    def evaluate(self, response: Response) -> Outcome:
        v = response.get("latency_ms")
        if v is None:
            return Outcome.failed("latency_ms is not recorded for this response")
        return Outcome.passed(v <= self.params.max_ms, f"{v:.0f} ms")


class CostParams(Params):
    max_usd: Annotated[float, Field(gt=0, allow_inf_nan=False)]


class Cost(Evaluator[CostParams]):
    kind = "cost"
    params_model = CostParams

    def evaluate(self, response: Response) -> Outcome:
        v = response.get("cost_usd")
        if v is None:
            return Outcome.failed("cost_usd is not recorded for this response")
        return Outcome.passed(v <= self.params.max_usd, f"${v:.6f}")
