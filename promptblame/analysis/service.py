"""Answer analysis questions: read aggregates through the store, run the pure statistics.

This is the only analysis module that touches the store; the statistics modules stay pure.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np

from promptblame.analysis import changepoints as cp
from promptblame.analysis import compare as cmp
from promptblame.analysis import gate as gt
from promptblame.analysis.moments import Moments
from promptblame.analysis.sequential import always_valid
from promptblame.errors import InvalidArgument, NotFound
from promptblame.review.trust import check_gate
from promptblame.store import BUILTIN_METRICS, ResponseFilter, Store
from promptblame.store.filters import EVAL_VERSION_COLUMNS, EvalRun

# Raw values fetched per group for rank tests, the bootstrap and the auto rule's shape check.
# Above this, a seeded reservoir sample is used (ClickHouse groupArraySample) and flagged.
MAX_RAW_VALUES = 50_000

Test = Literal[
    "auto",
    "welch_t",
    "mann_whitney_u",
    "proportions",
    "fisher_exact",
    "bootstrap",
    "paired_t",
    "wilcoxon_signed_rank",
    "mcnemar_exact",
]
PAIRED_TESTS = ("paired_t", "wilcoxon_signed_rank", "mcnemar_exact")


@dataclass(frozen=True)
class CompareSpec:
    metric: str
    a: ResponseFilter
    b: ResponseFilter
    source: str = ""
    test: Test = "auto"
    statistic: str = "p95"
    alpha: float = 0.05
    sequential: bool = False
    effect_of_interest: float | None = None


@dataclass
class Answer:
    metric: str
    source: str
    comparison: cmp.Comparison
    warnings: list[str] = field(default_factory=list)
    sequential: dict[str, Any] | None = None


def resolve_source(store: Store, project_id: str, metric: str, source: str) -> str:
    """The score source to analyse. Mixing sources (e.g. two evaluator versions) would turn an
    evaluator change into a fake quality shift, so an ambiguous metric must name its source."""
    if metric in BUILTIN_METRICS or source:
        return source
    sources = store.score_sources(project_id, metric)
    if len(sources) > 1:
        raise InvalidArgument(
            "source",
            f"metric {metric!r} is scored by several sources ({', '.join(sources)}); choose one",
        )
    return sources[0] if sources else ""


def compare_groups(store: Store, project_id: str, spec: CompareSpec) -> Answer:
    source = resolve_source(store, project_id, spec.metric, spec.source)
    if spec.test in PAIRED_TESTS:
        return _paired(store, project_id, spec, source)
    needs_values = spec.test in ("auto", "mann_whitney_u", "bootstrap")
    groups = store.group_moments(
        project_id,
        {"a": spec.a, "b": spec.b},
        metric=spec.metric,
        source=source,
        sample=MAX_RAW_VALUES if needs_values else 0,
    )
    ga, gb = groups["a"], groups["b"]
    ma = Moments(int(ga["n"]), float(ga["total"]), float(ga["total_sq"]))
    mb = Moments(int(gb["n"]), float(gb["total"]), float(gb["total_sq"]))
    binary = ga["non_binary"] == 0 and gb["non_binary"] == 0
    warnings = ["groups_overlap"] if ga["overlap"] or gb["overlap"] else []
    test = spec.test

    if test in ("proportions", "fisher_exact") or (test == "auto" and binary and ma.n and mb.n):
        if not binary:
            raise InvalidArgument("test", f"{test} needs a pass/fail (0/1) metric")
        result = cmp.proportions(
            a_success=round(ma.total),
            a_n=ma.n,
            b_success=round(mb.total),
            b_n=mb.n,
            alpha=spec.alpha,
            test="fisher" if test == "fisher_exact" else "auto",
            effect_of_interest=spec.effect_of_interest,
        )
    elif test == "welch_t":
        result = cmp.welch(a=ma, b=mb, alpha=spec.alpha, effect_of_interest=spec.effect_of_interest)
    else:
        va, vb = np.asarray(ga["sample"], float), np.asarray(gb["sample"], float)
        if max(ma.n, mb.n) > MAX_RAW_VALUES:
            warnings.append("sampled_raw_values")
        if test == "mann_whitney_u":
            result = cmp.mann_whitney(a=va, b=vb, alpha=spec.alpha)
        elif test == "bootstrap":
            result = cmp.bootstrap(a=va, b=vb, statistic=spec.statistic, alpha=spec.alpha)
        else:  # auto, continuous: the rule looks at the shape; Welch uses the exact moments
            chosen, why = cmp.choose_test(a=va, b=vb)
            if chosen == "mann_whitney_u":
                result = cmp.compare(a=va, b=vb, alpha=spec.alpha)
            else:
                welch = cmp.welch(
                    a=ma, b=mb, alpha=spec.alpha, effect_of_interest=spec.effect_of_interest
                )
                result = replace(welch, why=f"auto: {why}")

    answer = Answer(spec.metric, source, result, warnings)
    if spec.sequential:
        answer.sequential = asdict(always_valid(a=ma, b=mb, alpha=spec.alpha))
    return answer


def _paired(store: Store, project_id: str, spec: CompareSpec, source: str) -> Answer:
    pairs = store.paired_values(project_id, spec.a, spec.b, metric=spec.metric, source=source)
    a = [float(p["a"]) for p in pairs]
    b = [float(p["b"]) for p in pairs]
    if spec.test == "mcnemar_exact":
        if any(v not in (0.0, 1.0) for v in (*a, *b)):
            raise InvalidArgument("test", "mcnemar_exact needs a pass/fail (0/1) metric per case")
        result = cmp.mcnemar(
            a_pass=[v == 1.0 for v in a], b_pass=[v == 1.0 for v in b], alpha=spec.alpha
        )
    elif spec.test == "wilcoxon_signed_rank":
        result = cmp.wilcoxon(a=a, b=b, alpha=spec.alpha)
    else:
        result = cmp.paired_t(
            a=a, b=b, alpha=spec.alpha, effect_of_interest=spec.effect_of_interest
        )
    return Answer(spec.metric, source, result)


def comparison_dict(c: cmp.Comparison) -> dict[str, Any]:
    return {**asdict(c), "significant": c.significant}


# -- experiments ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ExperimentSpec:
    experiment: str
    metrics: Sequence[str]
    control: str = ""
    split: Mapping[str, float] | None = None  # expected traffic shares; None = equal
    source: str = ""
    alpha: float = 0.05
    sequential: bool = False
    base: ResponseFilter = field(default_factory=ResponseFilter)


def experiment_report(store: Store, project_id: str, spec: ExperimentSpec) -> dict[str, Any]:
    """Every arm vs control on every metric, p-values corrected (Holm and BH) over the whole
    family, plus a sample-ratio-mismatch check of the arms' traffic."""
    scope = replace(spec.base, experiment=spec.experiment)
    counts = store.group_counts(project_id, scope, by="variant")
    if not counts:
        return {"experiment": spec.experiment, "arms": {}, "reason": "no_data", "results": []}
    control = spec.control or ("control" if "control" in counts else "")
    if control not in counts:
        raise InvalidArgument(
            "control", f"name the control arm; arms seen: {', '.join(sorted(counts))}"
        )
    expected = dict(spec.split) if spec.split else {arm: 1.0 for arm in counts}
    unknown = sorted(set(counts) - set(expected))
    if unknown:
        raise InvalidArgument("split", f"arms missing from the split: {', '.join(unknown)}")
    ratio = cmp.srm(observed={k: counts.get(k, 0) for k in expected}, expected=expected)

    results: list[dict[str, Any]] = []
    for metric in spec.metrics:
        for arm in sorted(counts):
            if arm == control:
                continue
            answer = compare_groups(
                store,
                project_id,
                CompareSpec(
                    metric=metric,
                    source=spec.source,
                    a=replace(scope, variant=control),
                    b=replace(scope, variant=arm),
                    alpha=spec.alpha,
                    sequential=spec.sequential,
                ),
            )
            results.append(
                {
                    "metric": metric,
                    "source": answer.source,
                    "arm": arm,
                    "control": control,
                    **comparison_dict(answer.comparison),
                    "sequential": answer.sequential,
                }
            )
    p_values = [r["p_value"] if r["p_value"] is not None else float("nan") for r in results]
    for r, holm, bh in zip(
        results, cmp.adjust(p_values, method="holm"), cmp.adjust(p_values, method="bh"), strict=True
    ):
        r["p_holm"] = None if np.isnan(holm) else holm
        r["p_bh"] = None if np.isnan(bh) else bh
        r["significant_holm"] = None if r["p_holm"] is None else r["p_holm"] < spec.alpha
    return {
        "experiment": spec.experiment,
        "control": control,
        "arms": counts,
        "srm": {
            **asdict(ratio),
            "expected_split": "given" if spec.split else "assumed equal (pass split= to set)",
        },
        "results": results,
    }


# -- series --------------------------------------------------------------------------------

MAX_BUCKETS = 20_000


def series_with_change_points(
    store: Store,
    project_id: str,
    f: ResponseFilter,
    *,
    metric: str,
    source: str = "",
    bucket_seconds: int,
) -> dict[str, Any]:
    """The bucketed series of a metric (by response time) and the change points in it."""
    source = resolve_source(store, project_id, metric, source)
    rows = store.metric_series(
        project_id, f, metric=metric, source=source, bucket_seconds=bucket_seconds
    )
    if len(rows) > MAX_BUCKETS:
        raise InvalidArgument(
            "bucket", f"{len(rows)} buckets; widen the bucket or narrow since/until"
        )
    buckets = [cp.Bucket(r["bucket"], int(r["n"]), r["total"], r["total_sq"]) for r in rows]
    result = cp.detect_change_points(buckets=buckets)
    return {
        "metric": metric,
        "source": source,
        "bucket_seconds": bucket_seconds,
        "buckets": [
            {
                "start": r["bucket"],
                "n": int(r["n"]),
                "mean": r["total"] / r["n"],
                "sd": Moments(int(r["n"]), r["total"], r["total_sq"]).var ** 0.5
                if r["n"] > 1
                else None,
            }
            for r in rows
        ],
        "change_points": [asdict(c) for c in result.change_points],
        "segments": [asdict(s) for s in result.segments],
        "method": result.method,
        "params": dict(result.params),
        "reason": result.reason,
    }


# -- the CI gate -----------------------------------------------------------------------------

# Built-in response metrics where lower is better; every score is higher-is-better.
LOWER_IS_BETTER = frozenset(BUILTIN_METRICS)


@dataclass(frozen=True)
class GateSpec:
    app: str
    baseline: str
    candidate: str
    by: Literal["auto", "prompt_version", "model_version", "model"] = "auto"
    environment: str = "eval"
    baseline_run: str | None = None
    """None: the version's newest run."""
    candidate_run: str | None = None
    metrics: Sequence[str] = ()
    """Score names or built-in response metrics; empty: every score on both runs."""
    max_drop: float = 0.02
    max_drop_per_metric: Mapping[str, float] = field(default_factory=dict)
    alpha: float = 0.05
    case_threshold: float | None = None


def run_gate(store: Store, project_id: str, spec: GateSpec) -> dict[str, Any]:
    """Pair the two versions' eval runs by case, gate every metric, attach excerpts of the
    cases that moved. Raises InvalidArgument/NotFound when the runs cannot be compared."""
    column, found = _gate_runs(store, project_id, spec)
    sides = {
        side: _chosen_run(found[side], version, run_id, side)
        for side, version, run_id in (
            ("baseline", spec.baseline, spec.baseline_run),
            ("candidate", spec.candidate, spec.candidate_run),
        )
    }
    builtin = [m for m in spec.metrics if m in BUILTIN_METRICS]
    values: dict[str, dict[tuple[str, str], dict[str, float]]] = {}
    cases: dict[str, dict[str, dict[str, Any]]] = {}
    for side, info in sides.items():
        run = EvalRun(spec.app, spec.environment, column, info["version"], info["run_id"])
        per_metric: dict[tuple[str, str], dict[str, float]] = {}
        for r in store.eval_case_scores(project_id, run, builtin=builtin):
            per_metric.setdefault((r["name"], r["source"]), {})[r["case_id"]] = float(r["value"])
        values[side] = per_metric
        cases[side] = {c["case_id"]: c for c in store.eval_cases(project_id, run)}
    wanted = set(values["baseline"]) | set(values["candidate"])
    if spec.metrics:
        unknown = [m for m in spec.metrics if not any(name == m for name, _ in wanted)]
        if unknown:
            raise InvalidArgument(
                "metric",
                f"no values of {', '.join(unknown)} on either run; scored here: "
                + (", ".join(sorted({n for n, _ in wanted})) or "nothing"),
            )
        wanted = {k for k in wanted if k[0] in spec.metrics}
    if not wanted:
        raise InvalidArgument(
            "metric", "neither run has scores: score the eval responses (app scores or evaluators)"
        )
    trust_warnings = check_gate(store, project_id, wanted)  # raises when a rule refuses
    result = gt.gate(
        [
            gt.MetricCases(
                metric=name,
                source=source,
                baseline=values["baseline"].get((name, source), {}),
                candidate=values["candidate"].get((name, source), {}),
                higher_is_better=name not in LOWER_IS_BETTER,
            )
            for name, source in sorted(wanted)
        ],
        max_drop={**{n: spec.max_drop for n, _ in wanted}, **spec.max_drop_per_metric},
        alpha=spec.alpha,
        case_threshold=spec.case_threshold,
    )
    warnings = list(trust_warnings)
    for other in (c for c in EVAL_VERSION_COLUMNS if c != column):
        b, c = sides["baseline"][f"{other}s"], sides["candidate"][f"{other}s"]
        if b != c:
            warnings.append(
                f"also_changed: {other} {', '.join(b) or '-'} -> {', '.join(c) or '-'}; the gate"
                " measures both changes together"
            )
    only_b = sorted(set(cases["baseline"]) - set(cases["candidate"]))
    only_c = sorted(set(cases["candidate"]) - set(cases["baseline"]))
    if only_b or only_c:
        warnings.append(
            f"missing_cases: {len(only_b)} only in the baseline run, {len(only_c)} only in the"
            " candidate run; they are not compared"
        )

    def excerpt(change: gt.CaseChange) -> dict[str, Any]:
        b = cases["baseline"].get(change.case_id, {})
        c = cases["candidate"].get(change.case_id, {})
        return {
            **asdict(change),
            "input": c.get("input") or b.get("input", ""),
            "baseline_output": b.get("output", ""),
            "candidate_output": c.get("output", ""),
        }

    metrics = []
    for m in result.metrics:
        d = asdict(m)
        d["regressed"] = [excerpt(c) for c in m.regressed]
        d["improved"] = [excerpt(c) for c in m.improved]
        metrics.append(d)
    answer = {
        "verdict": result.verdict,
        "app": spec.app,
        "environment": spec.environment,
        "compared": column,
        "alpha": spec.alpha,
        "baseline": sides["baseline"],
        "candidate": sides["candidate"],
        "cases_only_in_baseline": only_b,
        "cases_only_in_candidate": only_c,
        "metrics": metrics,
        "warnings": warnings,
    }
    _keep_gate_result(store, project_id, answer)
    return answer


def _keep_gate_result(store: Store, project_id: str, answer: dict[str, Any]) -> None:
    """Record the verdict: a protected prompt label accepts only a version that passed."""
    column, cand = answer["compared"], answer["candidate"]

    def values(name: str) -> list[str]:
        return [cand["version"]] if column == name else list(cand.get(f"{name}s", []))

    store.insert_rows(
        "gate_results",
        [
            {
                "project_id": project_id,
                "app": answer["app"],
                "environment": answer["environment"],
                "compared": column,
                "baseline": answer["baseline"]["version"],
                "candidate": cand["version"],
                "candidate_run": cand["run_id"],
                "prompt_ids": list(cand.get("prompt_ids", [])),
                "models": values("model"),
                "model_versions": values("model_version"),
                "verdict": answer["verdict"],
                "result": json.dumps(answer, default=str),
                "ts": datetime.now(UTC),
            }
        ],
    )


def _gate_runs(
    store: Store, project_id: str, spec: GateSpec
) -> tuple[str, dict[str, list[dict[str, Any]]]]:
    """Which version column the two names live in — the one given, else the first where both
    have eval responses (prompt version, then model version, then model) — and each side's
    runs there."""
    columns = EVAL_VERSION_COLUMNS if spec.by == "auto" else (spec.by,)
    for column in columns:
        found = {
            side: store.eval_runs(project_id, EvalRun(spec.app, spec.environment, column, v))
            for side, v in (("baseline", spec.baseline), ("candidate", spec.candidate))
        }
        if all(found.values()):
            return column, found
    raise NotFound(
        f"no {spec.environment!r} responses of app {spec.app!r} for both {spec.baseline!r} and"
        f" {spec.candidate!r} as {' or '.join(columns)}; ship the eval runs first"
    )


def _chosen_run(
    runs: list[dict[str, Any]], version: str, run_id: str | None, side: str
) -> dict[str, Any]:
    """The named run, else the newest."""
    chosen = runs[0] if run_id is None else next((r for r in runs if r["run_id"] == run_id), None)
    if chosen is None:
        raise InvalidArgument(
            f"{side}_run",
            f"{version!r} has no eval run {run_id!r}; runs: "
            + ", ".join(repr(r["run_id"]) for r in runs),
        )
    return {
        "version": version,
        **chosen,
        "first_ts": chosen["first_ts"].isoformat(),
        "last_ts": chosen["last_ts"].isoformat(),
        "other_runs": [r["run_id"] for r in runs if r is not chosen],
    }
