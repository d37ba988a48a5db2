"""How well each evaluator version agrees with the human labels, and whether it may be trusted.

Reads the labels and the evaluators' scores of the labelled responses through the store, pairs
them by response and hands them to `agreement` (pure). Per metric with a label field: one row
per score source (an evaluator version: `evaluator:<name>@<version>`, or `app`) against the
humans, and the humans against each other on the overlap. A trust rule on the metric marks
each source trusted, untrusted (agreement below the minimum) or unproven (too few labels).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

from promptblame.review.agreement import Agreement, Level, alpha, measure
from promptblame.review.config import LabelField, TrustRule
from promptblame.review.queues import current
from promptblame.store import Store

Status = Literal["trusted", "untrusted", "unproven", "no_rule"]
LEVELS: dict[str, Level] = {
    "pass_fail": "categorical",
    "categories": "categorical",
    "scale": "ordinal",
    "number": "continuous",
}


@dataclass(frozen=True)
class Trust:
    status: Status
    reason: str

    @property
    def flagged(self) -> bool:
        return self.status in ("untrusted", "unproven")


def judge(rule: TrustRule | None, agreement: Agreement | None, source: str) -> Trust:
    if rule is None:
        return Trust("no_rule", "")
    need = (
        f"the project requires {rule.min_agreement:g} on at least {rule.min_items}"
        " labelled responses"
    )
    primary = agreement.primary if agreement else None
    n = agreement.n if agreement else 0
    if agreement is None or n < rule.min_items:
        return Trust(
            "unproven",
            f"{source} has {n} human-labelled responses of {rule.metric}; {need}",
        )
    if primary is None or primary.value is None:
        why = primary.reason if primary else agreement.reason
        return Trust("unproven", f"{source}: agreement with humans is undefined ({why}); {need}")
    if primary.value < rule.min_agreement:
        return Trust(
            "untrusted",
            f"{source} agrees with humans on {rule.metric} at {primary.name}"
            f" {primary.value:.2f} (n={n}); {need}",
        )
    return Trust("trusted", f"{primary.name} {primary.value:.2f} (n={n}) ≥ {rule.min_agreement:g}")


def _human_values(store: Store, project_id: str, metric: str) -> dict[str, list[float]]:
    """event_id → the metric's label by each reviewer, first reviewer first (every queue)."""
    out: dict[str, list[float]] = {}
    for a in store.review_answers(project_id):
        if a["action"] != "label":
            continue
        value = json.loads(a["labels"]).get(metric)
        if value is not None:
            out.setdefault(a["event_id"], []).append(float(value))
    return out


def metric_agreement(
    store: Store, project_id: str, field: LabelField, rule: TrustRule | None, *, full: bool = True
) -> dict[str, Any]:
    """`full` off: the evaluators' primary coefficients only (what trust needs), no alpha
    bootstrap and no human–human figures."""
    level = LEVELS[field.kind]
    levels = [v for v, _ in field.choices()]
    humans = _human_values(store, project_id, field.name)
    by_source: dict[str, dict[str, float]] = {}
    for r in store.reviewed_scores(project_id, field.name):
        by_source.setdefault(r["source"], {})[r["event_id"]] = float(r["value"])
    evaluators = []
    for source, values in sorted(by_source.items()):
        ids = sorted(set(values) & set(humans))
        ag = measure(
            [humans[e][0] for e in ids],
            [values[e] for e in ids],
            level=level,
            levels=levels,
            with_alpha=full,
        )
        t = judge(rule, ag, source)
        evaluators.append({"source": source, **_public(ag), "trust": asdict(t)})
    if not full:
        return {"metric": field.name, "evaluators": evaluators}
    overlap = [vs for vs in humans.values() if len(vs) >= 2]
    hh = measure([v[0] for v in overlap], [v[1] for v in overlap], level=level, levels=levels)
    hh_alpha = alpha(overlap, level=level, levels=levels)
    return {
        "metric": field.name,
        "kind": field.kind,
        "level": level,
        "labelled": len(humans),
        "rule": rule.model_dump() if rule else None,
        "evaluators": evaluators,
        "human_human": {
            **_public(hh),
            "coefficients": _public(hh)["coefficients"]
            + ([] if any(c.name == hh_alpha.name for c in hh.coefficients) else [asdict(hh_alpha)]),
        },
    }


def _public(ag: Agreement) -> dict[str, Any]:
    primary = ag.primary
    return {
        "level": ag.level,
        "n": ag.n,
        "percent_agreement": ag.percent_agreement,
        "primary": asdict(primary) if primary else None,
        "coefficients": [asdict(c) for c in ag.coefficients],
        "reason": ag.reason,
    }


def report(store: Store, project_id: str, metric: str = "") -> list[dict[str, Any]]:
    """Agreement of every labelled metric (or one), per evaluator version and human–human."""
    cfg = current(store, project_id)
    rules = {r.metric: r for r in cfg.trust}
    fields = cfg.fields_by_metric()
    names = [metric] if metric else sorted(fields)
    return [
        metric_agreement(store, project_id, fields[m], rules.get(m)) for m in names if m in fields
    ]


def flags(store: Store, project_id: str) -> dict[tuple[str, str], Trust]:
    """(metric, source) → its trust, for every metric with a rule: what pages flag and the
    gate checks. A source with no labelled responses at all is unproven."""
    cfg = current(store, project_id)
    out: dict[tuple[str, str], Trust] = {}
    fields = cfg.fields_by_metric()
    for rule in cfg.trust:
        if rule.metric not in fields:
            continue
        row = metric_agreement(store, project_id, fields[rule.metric], rule, full=False)
        for e in row["evaluators"]:
            out[(rule.metric, e["source"])] = Trust(e["trust"]["status"], e["trust"]["reason"])
    return out


def trust_of(
    store: Store,
    project_id: str,
    metric: str,
    source: str,
    known: dict[tuple[str, str], Trust],
    by_metric: dict[str, TrustRule] | None = None,
) -> Trust:
    """One source's trust; a source the humans never met under a rule is unproven."""
    if (metric, source) in known:
        return known[(metric, source)]
    if by_metric is None:
        by_metric = rules(store, project_id)
    if metric in by_metric and not source.startswith("human:"):
        return judge(by_metric[metric], None, source)
    return Trust("no_rule", "")


def rules(store: Store, project_id: str) -> dict[str, TrustRule]:
    return {r.metric: r for r in current(store, project_id).trust}


def flagger(store: Store, project_id: str) -> Callable[[str, str], dict[str, str] | None]:
    """(metric, source) → {"status", "reason"} when pages must flag those scores, else None.
    Computed once per page; a project without trust rules costs one small read."""
    by_metric = rules(store, project_id)
    if not by_metric:
        return lambda metric, source: None
    known = flags(store, project_id)

    def flag(metric: str, source: str) -> dict[str, str] | None:
        if not source.startswith("evaluator:"):
            return None
        t = trust_of(store, project_id, metric, source, known, by_metric)
        return {"status": t.status, "reason": t.reason} if t.flagged else None

    return flag


def flag_words(store: Store, project_id: str, metric: str, source: str) -> list[str]:
    """A page's warning line for scores of a flagged evaluator ([] when not flagged)."""
    return flags_for(store, project_id, [(metric, source)]) if source else []


def flags_for(
    store: Store,
    project_id: str,
    pairs: list[tuple[str, str]],
    flag: Callable[[str, str], dict[str, str] | None] | None = None,
) -> list[str]:
    """Warning lines for the (metric, source) pairs a page shows; an empty source stands for
    every source that scored the metric. `flag`: a `flagger` the page already made."""
    flag = flag or flagger(store, project_id)
    out: list[str] = []
    for metric, source in dict.fromkeys(pairs):
        for src in [source] if source else store.score_sources(project_id, metric):
            f = flag(metric, src)
            line = f"{src} is {f['status']} for {metric}: {f['reason']}" if f else ""
            if line and line not in out:
                out.append(line)
    return out
