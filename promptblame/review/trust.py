"""Trust rules at the decision points: may these scores decide a gate?

An evaluator version (`evaluator:<name>@<version>…`) scoring a metric with a trust rule must
have earned it (calibration.Trust "trusted"); otherwise an enforced rule refuses it and a
flag-only rule adds a warning. Scores from the app or from people are not evaluators: no rule.
"""

from __future__ import annotations

from collections.abc import Iterable

from promptblame.errors import UntrustedEvaluator
from promptblame.review import calibration
from promptblame.store import Store


def check_gate(
    store: Store,
    project_id: str,
    pairs: Iterable[tuple[str, str]],
    *,
    decider: str = "the gate refuses to decide",
) -> list[str]:
    """Raise UntrustedEvaluator naming every refused (metric, source); return warnings for the
    flagged ones whose rule only flags."""
    pairs = sorted({p for p in pairs if p[1].startswith("evaluator:")})
    rules = calibration.rules(store, project_id)
    if not pairs or not any(m in rules for m, _ in pairs):
        return []
    known = calibration.flags(store, project_id)
    refused, warnings = [], []
    for metric, source in pairs:
        t = calibration.trust_of(store, project_id, metric, source, known, rules)
        if not t.flagged:
            continue
        if rules[metric].enforce:
            refused.append(f"{metric} from {source}: {t.status} ({t.reason})")
        else:
            warnings.append(f"untrusted_evaluator: {metric} from {source}: {t.reason}")
    if refused:
        raise UntrustedEvaluator(
            f"{decider} on scores of evaluators that have not earned the project's trust"
            " rule: "
            + "; ".join(refused)
            + ". Label more responses in a review queue, name other metrics, or change the rule"
            " (see GET /v1/agreement)."
        )
    return warnings


def check_guardrails(
    store: Store, project_id: str, guardrails: Iterable[tuple[str, str]]
) -> list[str]:
    """The same rule for a rollout's guardrails (metric, source; '' = the metric's only
    source), checked when the rollout starts."""
    pairs = []
    for metric, source in guardrails:
        if not source:
            sources = store.score_sources(project_id, metric)
            source = sources[0] if len(sources) == 1 else ""
        pairs.append((metric, source))
    return check_gate(store, project_id, pairs, decider="a rollout guardrail may not watch")
