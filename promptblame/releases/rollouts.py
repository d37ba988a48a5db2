"""Guarded rollouts: a candidate prompt version takes a label's traffic in steps while the
always-valid guardrails of `policy` watch it against the incumbent; rolled back, paused or
promoted by the rollout job, or by a person.

State machine: running(step i) → running(step i+1) … → completed | rolled_back | aborted, with
paused ⇄ running. Every transition is one append-only event holding the whole new state,
claimed by sequence number (compare-and-set), so the job and a person acting at the same moment
cannot both win, a `kill -9` leaves the old state or the new one, and a restarted job continues
from the stored state. Effects that follow a transition (the label moving to the candidate on
completion, the incident of a rollback) are idempotent and re-applied by every pass until they
hold (`reconcile`): a crash between a transition and its effect loses nothing and repeats
nothing.

While a rollout is running or paused, resolving its label splits units between the incumbent
(the label's version) and the candidate by the current step's percent (`splits`); responses
logged with what was served carry experiment = `<rollout id>/<step>` and variant = incumbent or
candidate, which is what the watch compares.

A live experiment is a rollout without a ramp (`ExperimentIn`): a fixed split of the label's
traffic between its version (the control) and other variants, watched the same way, never
promoted automatically. Its responses carry experiment = `<id>` and variant = the version.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from promptblame.analysis.attribution.verdict import Evidence, Verdict
from promptblame.analysis.moments import Moments
from promptblame.errors import Conflict, InvalidArgument, NotFound, UntrustedEvaluator
from promptblame.releases import labels, policy
from promptblame.releases.splits import arm
from promptblame.review.trust import check_guardrails
from promptblame.store import BUILTIN_METRICS, ResponseFilter, Store

log = logging.getLogger(__name__)

ACTIVE = labels.ACTIVE_ROLLOUT
Name = Annotated[str, Field(min_length=1, max_length=256)]


class GuardrailIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    metric: Name
    source: Annotated[str, Field(max_length=256)] = ""
    direction: Literal["higher_is_better", "lower_is_better"] = "higher_is_better"
    max_drop: Annotated[float, Field(ge=0, le=1e12, allow_inf_nan=False)] = 0.0
    relative: bool = Field(False, description="max_drop as a share of the incumbent's mean")
    alpha: Annotated[float, Field(gt=0, lt=0.5)] = 0.05


class RolloutIn(BaseModel):
    """A staged rollout of `candidate` on a label (also the shape of a rollout file)."""

    model_config = ConfigDict(extra="forbid")
    prompt_id: Name
    label: Annotated[str, Field(min_length=1, max_length=64)]
    model: Annotated[str, Field(max_length=256)] = ""
    candidate: Name
    steps: Annotated[list[float], Field(min_length=1, max_length=20)] = [1, 5, 25, 50, 100]
    min_responses_per_step: Annotated[int, Field(ge=1, le=10_000_000)] = 200
    min_minutes_per_step: Annotated[float, Field(ge=0, le=100_000)] = 30.0
    guardrails: Annotated[list[GuardrailIn], Field(min_length=1, max_length=20)]
    on_regression: Literal["rollback", "pause"] = "rollback"
    on_srm: Literal["pause"] = "pause"
    reason: Annotated[str, Field(max_length=2000)] = ""
    force: bool = Field(False, description="past a protected label's gate rule, with a reason")
    rollout_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")] | None = Field(
        None, description="a name of your own (unique in the project); default: generated"
    )

    @field_validator("steps")
    @classmethod
    def _steps(cls, steps: list[float]) -> list[float]:
        why = policy.validate_steps(steps)
        if why:
            raise ValueError(why)
        return steps


class ExperimentIn(BaseModel):
    """A live A/B experiment of prompt variants on a label: a fixed split, no promotion."""

    model_config = ConfigDict(extra="forbid")
    prompt_id: Name
    label: Annotated[str, Field(min_length=1, max_length=64)]
    model: Annotated[str, Field(max_length=256)] = ""
    variants: dict[Name, Annotated[float, Field(allow_inf_nan=False)]] = Field(
        description="version → percent of the label's traffic; the label's version is the"
        " control and must be one of them",
        examples=[{"v3": 50, "v4": 25, "v5": 25}],
        max_length=20,
    )
    guardrails: Annotated[list[GuardrailIn], Field(max_length=20)] = []
    on_regression: Literal["rollback", "pause"] = "rollback"
    on_srm: Literal["pause"] = "pause"
    reason: Annotated[str, Field(max_length=2000)] = ""
    force: bool = Field(False, description="past a protected label's gate rule, with a reason")
    experiment_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")] | None = (
        Field(None, description="a name of your own (unique in the project); default: generated")
    )

    @field_validator("variants")
    @classmethod
    def _variants(cls, variants: dict[str, float]) -> dict[str, float]:
        why = policy.validate_split(variants)
        if why:
            raise ValueError(why)
        return variants


@dataclass
class RolloutRun:
    looked: int = 0
    transitions: list[str] = field(default_factory=list)


def plan_of(state: dict[str, Any]) -> policy.Plan:
    c = json.loads(state["config"])
    return policy.Plan(
        steps=tuple(c.get("steps", ())),
        min_responses_per_step=c.get("min_responses_per_step", 0),
        min_minutes_per_step=c.get("min_minutes_per_step", 0.0),
        guardrails=tuple(
            policy.Guardrail(
                metric=g["metric"],
                source=g["source"],
                higher_is_better=g["direction"] == "higher_is_better",
                max_drop=g["max_drop"],
                relative=g["relative"],
                alpha=g["alpha"],
            )
            for g in c["guardrails"]
        ),
        on_regression=c["on_regression"],
    )


def start(
    store: Store,
    project_id: str,
    spec: RolloutIn | ExperimentIn,
    *,
    key_id: str,
    protected: frozenset[str],
    now: datetime | None = None,
) -> dict[str, Any]:
    """Validate against what is stored and start: a rollout at its first step, an experiment
    at its split."""
    now = now or datetime.now(UTC)
    labels.check_label(spec.label)
    pointer = labels.current(store, project_id, spec.prompt_id, spec.label, spec.model)
    if pointer is None:
        raise NotFound(
            f"prompt {spec.prompt_id!r} has no label {spec.label!r}"
            + (f" for model {spec.model!r}" if spec.model else "")
            + ": point it at the incumbent version first"
        )
    incumbent = pointer["to_version"]
    if isinstance(spec, RolloutIn):
        if spec.candidate == incumbent:
            raise InvalidArgument("candidate", f"the label already serves {incumbent!r}")
        news = {"candidate": spec.candidate}
    else:
        if incumbent not in spec.variants:
            raise InvalidArgument(
                "variants", f"the label serves {incumbent!r}: it is the control, give its share"
            )
        news = {f"variants.{v}": v for v in spec.variants if v != incumbent}
    for field_name, version in news.items():
        if store.get_prompt_version(project_id, spec.prompt_id, version) is None:
            raise InvalidArgument(field_name, f"{spec.prompt_id}@{version} is not registered")
    _check_guardrails(store, project_id, spec.guardrails)
    busy = [
        s
        for s in store.rollout_states(project_id)
        if s["state"] in ACTIVE
        and (s["prompt_id"], s["label"], s["model"]) == (spec.prompt_id, spec.label, spec.model)
    ]
    if busy:
        raise Conflict(
            f"rollout {busy[0]['rollout_id']} is already {busy[0]['state']} on this label"
        )
    if spec.force and not spec.reason.strip():
        raise InvalidArgument("reason", "a forced rollout needs a reason")
    forced = False
    for version in news.values():  # every version served to users passes the label's rule
        move = labels.Move(
            prompt_id=spec.prompt_id,
            label=spec.label,
            model=spec.model,
            version=version,
            reason=spec.reason,
            force=spec.force,
        )
        forced = labels.check_gate(store, project_id, move, protected) or forced
    name = spec.rollout_id if isinstance(spec, RolloutIn) else spec.experiment_id
    rid = name or f"{spec.prompt_id}.{spec.label}.{uuid.uuid4().hex[:8]}"
    if store.rollout_states(project_id, rid):
        raise Conflict(f"a rollout or experiment named {rid!r} exists already")
    own = {"prompt_id", "label", "model", "candidate", "reason", "rollout_id", "experiment_id"}
    config = spec.model_dump(exclude=own | {"variants"})
    if isinstance(spec, RolloutIn):
        reason = f"{spec.prompt_id}@{spec.candidate} at {spec.steps[0]:g} %"
    else:
        config.update(kind="experiment", split=spec.variants)
        reason = "experiment " + ", ".join(f"{v} {w:g} %" for v, w in spec.variants.items())
    config.update(started_at=now.isoformat(), forced=forced)
    first = {
        "rollout_id": rid,
        "seq": 1,
        "token": uuid.uuid4().hex,
        "prompt_id": spec.prompt_id,
        "label": spec.label,
        "model": spec.model,
        "incumbent": incumbent,
        "candidate": ",".join(news.values()),
        "config": json.dumps(config),
        "state": "running",
        "step": 0,
        "step_started_at": now,
        "action": "start",
        "reason": spec.reason or reason,
        "detail": "{}",
        "key_id": key_id,
    }
    if not store.claim_rollout_event(project_id, first):  # started twice at the same moment
        raise Conflict(f"a rollout named {rid!r} was started meanwhile")
    return get(store, project_id, rid)


def _check_guardrails(store: Store, project_id: str, guardrails: list[GuardrailIn]) -> None:
    known = {e["name"] for e in store.evaluators(project_id) if not e["removed"]} | {
        g.metric for g in guardrails if store.score_sources(project_id, g.metric)
    }
    for i, g in enumerate(guardrails):
        if g.metric not in BUILTIN_METRICS and g.metric not in known:
            raise InvalidArgument(
                f"guardrails.{i}.metric",
                f"{g.metric!r} is not a score of this project, an evaluator, nor a response.*"
                " metric",
            )
    check_guardrails(store, project_id, [(g.metric, g.source) for g in guardrails])  # trust rules


def is_experiment(st: dict[str, Any]) -> bool:
    return json.loads(st["config"]).get("kind") == "experiment"


def get(store: Store, project_id: str, rollout_id: str) -> dict[str, Any]:
    states = store.rollout_states(project_id, rollout_id)
    if not states:
        raise NotFound(f"no rollout {rollout_id!r}")
    return states[0]


def transition(
    store: Store,
    project_id: str,
    current: dict[str, Any],
    *,
    state: str,
    action: str,
    reason: str,
    key_id: str,
    step: int | None = None,
    now: datetime | None = None,
    detail: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The next state, claimed after `current` (Conflict when something else moved first)."""
    now = now or datetime.now(UTC)
    moved_step = step is not None and step != current["step"]
    event = {
        **{k: current[k] for k in ("rollout_id", "prompt_id", "label", "model")},
        **{k: current[k] for k in ("incumbent", "candidate", "config")},
        "seq": current["seq"] + 1,
        "token": uuid.uuid4().hex,
        "state": state,
        "step": current["step"] if step is None else step,
        "step_started_at": now if moved_step else current["step_started_at"],
        "action": action,
        "reason": reason,
        "detail": json.dumps(detail or {}, default=str),
        "key_id": key_id,
    }
    if not store.claim_rollout_event(project_id, event):
        raise Conflict(f"rollout {current['rollout_id']} changed meanwhile; read it again")
    return get(store, project_id, current["rollout_id"])


def act(
    store: Store, project_id: str, rollout_id: str, action: str, *, key_id: str, note: str = ""
) -> dict[str, Any]:
    """A person's action: pause, resume, abort or promote."""
    st = get(store, project_id, rollout_id)
    allowed = {
        "pause": ("running",),
        "resume": ("paused",),
        "abort": ACTIVE,
        "promote": ACTIVE,
    }[action]
    if st["state"] not in allowed:
        raise Conflict(f"rollout {rollout_id} is {st['state']}: cannot {action} it")
    if action == "promote" and is_experiment(st):
        raise Conflict(
            f"{rollout_id} is an experiment: it has no promotion; abort it, then move the label"
            " to the variant you choose"
        )
    to = {"pause": "paused", "resume": "running", "abort": "aborted", "promote": "completed"}
    reason = note or f"{action} by a person"
    step = len(plan_of(st).steps) - 1 if action == "promote" else None
    new = transition(
        store, project_id, st, state=to[action], action=action, reason=reason, key_id=key_id,
        step=step,
    )  # fmt: skip
    reconcile(store, project_id, new)
    return new


def look(
    store: Store, project_id: str, st: dict[str, Any], plan: policy.Plan
) -> tuple[policy.Look, str]:
    """What the watch sees now: the responses served under this step's split per arm, each
    guardrail's moments per arm over every step so far; and the app they came from.

    Responses say which step's split served them (experiment `<rollout>/<step>`): caches in
    the api processes and the apps keep serving the old split for a while after a step
    changes, and counting those against the new split would look like a sample-ratio
    mismatch."""
    rid, step = st["rollout_id"], st["step"]
    here = ResponseFilter(experiment=served_as(st))
    counts = store.group_counts(project_id, here, by="variant")
    apps = store.group_counts(project_id, here, by="app")
    metrics = {}
    groups = {
        (v, s): ResponseFilter(experiment=experiment_of(rid, s), variant=v)
        for s in range(step + 1)
        for v in ("incumbent", "candidate")
    }
    names = {f"{v}/{s}": f for (v, s), f in groups.items()}
    for g in plan.guardrails:
        m = store.group_moments(project_id, names, metric=g.metric, source=g.source)
        metrics[g.metric] = tuple(
            sum(
                (
                    Moments(int(r["n"]), float(r["total"]), float(r["total_sq"]))
                    for name, r in m.items()
                    if name.startswith(v + "/")
                ),
                Moments(0, 0.0, 0.0),
            )
            for v in ("incumbent", "candidate")
        )
    minutes = (datetime.now(UTC) - st["step_started_at"]).total_seconds() / 60
    lk = policy.Look(
        step=st["step"],
        step_minutes=minutes,
        step_counts={k: counts.get(k, 0) for k in ("incumbent", "candidate")},
        metrics=metrics,  # type: ignore[arg-type]
    )
    return lk, max(apps, key=lambda a: apps[a]) if apps else ""


def look_experiment(
    store: Store, project_id: str, st: dict[str, Any], plan: policy.Plan
) -> tuple[policy.Decision, dict[str, int], str]:
    """The watch's decision on an experiment now, the responses per variant, and their app."""
    here = ResponseFilter(experiment=served_as(st))
    counts = store.group_counts(project_id, here, by="variant")
    apps = store.group_counts(project_id, here, by="app")
    weights = arms_of(st)
    names = {v: ResponseFilter(experiment=served_as(st), variant=v) for v, _, _ in weights}
    metrics = {}
    for g in plan.guardrails:
        m = store.group_moments(project_id, names, metric=g.metric, source=g.source)
        metrics[g.metric] = {
            v: Moments(int(r["n"]), float(r["total"]), float(r["total_sq"])) for v, r in m.items()
        }
    d = policy.decide_experiment(
        plan,
        control=st["incumbent"],
        weights=[(v, w) for v, _, w in weights],
        counts=counts,
        metrics=metrics,
    )
    counts = {v: counts.get(v, 0) for v, _, _ in weights}
    return d, counts, max(apps, key=lambda a: apps[a]) if apps else ""


def decision(
    store: Store, project_id: str, st: dict[str, Any]
) -> tuple[policy.Decision, dict[str, int], str]:
    """What the watch would do now, the responses per arm this step, and their app."""
    plan = plan_of(st)
    if is_experiment(st):
        return look_experiment(store, project_id, st, plan)
    lk, app = look(store, project_id, st, plan)
    return policy.decide(plan, lk), dict(lk.step_counts), app


def watch(store: Store, project_id: str, st: dict[str, Any], now: datetime) -> str | None:
    """One look at a running rollout; the action taken, if any. A guardrail whose evaluator
    has fallen below its trust rule since the start pauses it: its verdicts no longer count."""
    plan = plan_of(st)
    try:
        check_guardrails(store, project_id, [(g.metric, g.source) for g in plan.guardrails])
    except UntrustedEvaluator as exc:
        transition(
            store, project_id, st, state="paused", action="pause", key_id="rollout-job",
            reason=f"a guardrail's evaluator is no longer trusted: {exc}", now=now,
        )  # fmt: skip
        return "pause"
    d, counts, app = decision(store, project_id, st)
    if d.action == "wait":
        return None
    detail = {
        "counts": counts,
        "checks": [asdict(c) for c in d.checks],
        "srm_p": d.srm.p_value if d.srm else None,
        "app": app,
    }
    state, step = "running", st["step"]
    if d.action == "advance":
        step += 1
    elif d.action == "complete":
        state, step = "completed", len(plan.steps) - 1
    elif d.action == "rollback":
        state = "rolled_back"
    elif d.action == "pause":
        state = "paused"
    new = transition(
        store, project_id, st, state=state, action=d.action, reason=d.reason,
        key_id="rollout-job", step=step, now=now, detail=detail,
    )  # fmt: skip
    reconcile(store, project_id, new)
    return d.action


_BUCKETS = (5, 10, 30, 60, 300, 900, 3600, 6 * 3600, 86400)


def guardrail_paths(
    store: Store, project_id: str, st: dict[str, Any], *, now: datetime | None = None
) -> dict[str, dict[str, list[tuple[datetime, policy.Check]]]]:
    """Each guardrail's estimate over time, per compared arm: the checks the watch would have
    made at the end of each time bucket from the start to now or the final decision (about 60
    of them)."""
    plan = plan_of(st)
    started = datetime.fromisoformat(json.loads(st["config"])["started_at"])
    end = (now or datetime.now(UTC)) if st["state"] in ACTIVE else st["claimed_at"]
    span = (end - started).total_seconds()
    width = next((b for b in _BUCKETS if span / b <= 60), _BUCKETS[-1])
    if is_experiment(st):
        groups = {
            (v, v): ResponseFilter(experiment=served_as(st), variant=v) for v, _, _ in arms_of(st)
        }
        pairs = [(v, st["incumbent"], v) for v, _, _ in arms_of(st) if v != st["incumbent"]]
    else:
        groups = {
            (f"{v}/{s}", v): ResponseFilter(
                experiment=experiment_of(st["rollout_id"], s), variant=v
            )
            for s in range(st["step"] + 1)
            for v in ("incumbent", "candidate")
        }
        pairs = [("candidate", "incumbent", "candidate")]
    out: dict[str, dict[str, list[tuple[datetime, policy.Check]]]] = {}
    for g in plan.guardrails:
        per: dict[str, dict[datetime, Moments]] = {}
        for (_, arm_name), f in groups.items():
            got = per.setdefault(arm_name, {})
            for r in store.metric_series(
                project_id, f, metric=g.metric, source=g.source, bucket_seconds=width
            ):
                m = Moments(int(r["n"]), float(r["total"]), float(r["total_sq"]))
                seen = min(r["bucket"] + timedelta(seconds=width), end)  # the look at its end
                got[seen] = got.get(seen, Moments(0, 0.0, 0.0)) + m
        if is_experiment(st):  # each variant against the control at its share of alpha
            g = replace(g, alpha=g.alpha / max(1, len(pairs)))
        out[g.metric] = {
            name: policy.guardrail_path(g, per.get(control, {}), per.get(arm_name, {}))
            for name, control, arm_name in pairs
        }
    return out


def reconcile(store: Store, project_id: str, st: dict[str, Any]) -> None:
    """Make the effects of a final state hold (idempotent)."""
    if st["state"] == "completed":
        m = labels.Move(
            prompt_id=st["prompt_id"],
            label=st["label"],
            model=st["model"],
            version=st["candidate"],
            expected=st["incumbent"],
            reason=f"rollout {st['rollout_id']} completed",
            key_id="rollout-job",
        )
        now = labels.current(store, project_id, st["prompt_id"], st["label"], st["model"])
        if now is not None and now["to_version"] == st["incumbent"]:
            labels.move(store, project_id, m, protected=frozenset())  # gated at the start
    elif st["state"] == "rolled_back" and st["action"] == "rollback":
        _rollback_incident(store, project_id, st)


def _rollback_incident(store: Store, project_id: str, st: dict[str, Any]) -> None:
    iid = f"rollout-{st['rollout_id']}"
    if store.incident(project_id, iid) is not None:
        return
    detail = json.loads(st["detail"])
    bad = [c for c in detail.get("checks", []) if c["regressed"]]
    first = bad[0] if bad else {}
    plan = plan_of(st)
    inc = f"{st['prompt_id']}@{st['incumbent']}"
    served = first.get("n_candidate", 0)
    if is_experiment(st):  # the first regressed variant is the culprit
        version = first.get("arm") or st["candidate"].split(",")[0]
        percent = next((w for v, _, w in arms_of(st) if v == version), 0.0)
        cand = f"{st['prompt_id']}@{version}"
        summary = (
            f"ended experiment {st['rollout_id']}: {cand} ({percent:g} %) → {inc} after"
            f" {served:,} responses of {version}: " + st["reason"]
        )
    else:
        percent = plan.steps[st["step"]]
        cand = f"{st['prompt_id']}@{st['candidate']}"
        summary = (
            f"rolled back {cand} → {inc} at {percent:g} % after {served:,} candidate responses: "
            + st["reason"]
        )
    guard = next((g for g in plan.guardrails if g.metric == first.get("metric")), None)
    sign = 1.0 if guard is None or guard.higher_is_better else -1.0  # back to the metric's sign

    def raw(key: str) -> float | None:
        x = first.get(key)
        return None if x is None else sign * float(x)

    low, high = sorted((raw("low") or 0.0, raw("high") or 0.0))
    culprit = Evidence(
        dimension="prompt",
        value=cand,
        predecessor=inc,
        status="blamed",
        share_before=0.0,
        share_after=percent / 100,
        arrival_index=None,
        rollback=False,
        basis="concurrent",
        effect=raw("effect"),
        ci_low=low,
        ci_high=high,
        p_value=first.get("p_value"),
        n_new=int(first.get("n_candidate", 0)),
        n_old=int(first.get("n_incumbent", 0)),
        strata=1,
        test="always-valid mixture sequential test (mSPRT)",
        note=st["reason"],
    )
    verdict = Verdict(  # the shape attribution's verdicts have: pages and alerts read it alike
        kind="culprit",
        direction="regression",
        index=None,
        start=datetime.fromisoformat(json.loads(st["config"])["started_at"]),
        metric_kind="proportion" if first.get("rate") else "mean",
        higher_is_better=sign > 0,
        aggregate_effect=raw("effect"),
        level_before=None,
        level_after=None,
        window=1,
        culprit=culprit,
        candidates=(culprit,),
        summary=summary,
    )
    evidence = {
        **verdict.as_dict(),
        "rollout_id": st["rollout_id"],
        "checks": detail.get("checks", []),
        "counts": detail.get("counts", {}),
    }
    now = datetime.now(UTC)
    row = {
        "project_id": project_id,
        "incident_id": iid,
        "app": detail.get("app", ""),
        "route": "",
        "environment": "",
        "metric": first.get("metric", ""),
        "source": next((g.source for g in plan.guardrails if g.metric == first.get("metric")), ""),
        "bucket_seconds": 3600,
        "shift_start": datetime.fromisoformat(json.loads(st["config"])["started_at"]),
        "direction": "regression",
        "verdict": "culprit",
        "culprit": f"prompt {cand}",
        "summary": summary,
        "effect": raw("effect") or 0.0,
        "p_value": float(first.get("p_value") or 1.0),
        "evidence": json.dumps(evidence),
        "status": "open",
        "status_note": "",
        "revision": 1,
        "created_at": now,
        "updated_at": now,
    }
    store.insert_rows("incidents", [row])


def run_rollouts(
    store: Store,
    *,
    project_id: str | None = None,
    on_change: Callable[[str, str], None] | None = None,
) -> RolloutRun:
    """The rollout job: one look at every running rollout; effects of final states re-applied.
    `on_change(project, prompt)` after a transition (the serving process's resolve cache)."""
    run = RolloutRun()
    store.materialize_scores()
    now = datetime.now(UTC)
    recent = now - timedelta(days=1)
    for p in [project_id] if project_id else store.projects_with_rollouts():
        for st in store.rollout_states(p):
            try:
                if st["state"] == "running":
                    run.looked += 1
                    action = watch(store, p, st, now)
                    if action:
                        run.transitions.append(f"{st['rollout_id']}: {action}")
                        if on_change:
                            on_change(p, st["prompt_id"])
                elif st["claimed_at"] >= recent:
                    reconcile(store, p, st)
            except Conflict:
                continue  # a person acted meanwhile: the next pass looks again
            except Exception:
                log.exception("rollout %s: the watch failed", st["rollout_id"])
    return run


def experiment_of(rollout_id: str, step: int) -> str:
    """The experiment a response served under a rollout step's split is logged with."""
    return f"{rollout_id}/{step}"


def served_as(st: dict[str, Any]) -> str:
    """The experiment responses served by this rollout (its current step) or experiment carry."""
    return st["rollout_id"] if is_experiment(st) else experiment_of(st["rollout_id"], st["step"])


def arms_of(st: dict[str, Any]) -> list[tuple[str, str, float]]:
    """(variant, version, percent) of what the label serves now. A rollout's candidate comes
    first, so ramping it up only moves units from the incumbent (`splits`)."""
    c = json.loads(st["config"])
    if c.get("kind") == "experiment":
        return [(v, v, float(w)) for v, w in c["split"].items()]
    p = float(c["steps"][st["step"]])
    return [("candidate", st["candidate"], p), ("incumbent", st["incumbent"], 100 - p)]


def experiment_defaults(
    store: Store, project_id: str, experiment: str, control: str, split: str
) -> tuple[str, str, bool]:
    """(control, split, watched): a rollout's step or a live experiment compares against the
    label's version with the configured split and always-valid inference, unless the caller
    says otherwise."""
    rid, sep, step = experiment.rpartition("/")
    rollout = sep and step.isdigit()
    states = store.rollout_states(project_id, rid if rollout else experiment)
    if not states or is_experiment(states[0]) == bool(rollout):
        return control, split, False
    st = states[0]
    if rollout:
        if int(step) >= len(json.loads(st["config"])["steps"]):
            return control, split, False
        st = {**st, "step": int(step)}
    default = ",".join(f"{v}:{w:g}" for v, _, w in arms_of(st))
    return control or ("incumbent" if rollout else st["incumbent"]), split or default, True


def serving(
    states: list[dict[str, Any]], label: str, model: str, unit: str
) -> tuple[tuple[str, str, str], dict[str, Any]] | None:
    """((version, variant, experiment), the rollout) when an active rollout or experiment
    splits this pointer's traffic."""
    for st in states:
        if st["state"] in ACTIVE and (st["label"], st["model"]) == (label, model):
            arms = arms_of(st)
            variant = arm(st["rollout_id"], unit, [(v, w) for v, _, w in arms])
            version = next(version for v, version, _ in arms if v == variant)
            return (version, variant, served_as(st)), st
    return None


def public(
    store: Store, project_id: str, st: dict[str, Any], *, live: bool = False
) -> dict[str, Any]:
    """A rollout as the API shows it; with `live`, the watch's current estimates."""
    plan = plan_of(st)
    experiment = is_experiment(st)
    out: dict[str, Any] = {
        "rollout_id": st["rollout_id"],
        "kind": "experiment" if experiment else "rollout",
        "prompt_id": st["prompt_id"],
        "label": st["label"],
        "model": st["model"] or None,
        "incumbent": st["incumbent"],
        "candidate": st["candidate"],
        "state": st["state"],
        "step": st["step"],
        "percent": None if experiment else plan.steps[st["step"]],
        "steps": list(plan.steps),
        "split": {v: w for v, _, w in arms_of(st)},
        "experiment": served_as(st),
        "step_started_at": st["step_started_at"].isoformat(),
        "updated_at": st["claimed_at"].isoformat(),
        "reason": st["reason"],
        "config": json.loads(st["config"]),
    }
    if live:
        d, counts, app = decision(store, project_id, st)
        out["app"] = app
        out["responses_this_step"] = counts
        out["guardrails"] = [asdict(c) for c in d.checks]
        out["srm_p"] = d.srm.p_value if d.srm else None
        out["next"] = {"action": d.action, "reason": d.reason}
        out["log"] = [
            {
                "seq": e["seq"],
                "at": e["claimed_at"].isoformat(),
                "state": e["state"],
                "step": e["step"],
                "action": e["action"],
                "reason": e["reason"],
                "key_id": e["key_id"],
                "detail": json.loads(e["detail"]),
            }
            for e in store.rollout_log(project_id, st["rollout_id"])
        ]
    return out
