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
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from promptblame.analysis.attribution.verdict import Evidence, Verdict
from promptblame.analysis.moments import Moments
from promptblame.errors import Conflict, InvalidArgument, NotFound
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


@dataclass
class RolloutRun:
    looked: int = 0
    transitions: list[str] = field(default_factory=list)


def plan_of(state: dict[str, Any]) -> policy.Plan:
    c = json.loads(state["config"])
    return policy.Plan(
        steps=tuple(c["steps"]),
        min_responses_per_step=c["min_responses_per_step"],
        min_minutes_per_step=c["min_minutes_per_step"],
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
    spec: RolloutIn,
    *,
    key_id: str,
    protected: frozenset[str],
    now: datetime | None = None,
) -> dict[str, Any]:
    """Validate against what is stored and start at the first step."""
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
    if store.get_prompt_version(project_id, spec.prompt_id, spec.candidate) is None:
        raise InvalidArgument("candidate", f"{spec.prompt_id}@{spec.candidate} is not registered")
    if spec.candidate == incumbent:
        raise InvalidArgument("candidate", f"the label already serves {incumbent!r}")
    known = {e["name"] for e in store.evaluators(project_id) if not e["removed"]} | {
        g.metric for g in spec.guardrails if store.score_sources(project_id, g.metric)
    }
    for i, g in enumerate(spec.guardrails):
        if g.metric not in BUILTIN_METRICS and g.metric not in known:
            raise InvalidArgument(
                f"guardrails.{i}.metric",
                f"{g.metric!r} is not a score of this project, an evaluator, nor a response.*"
                " metric",
            )
    check_guardrails(store, project_id, [(g.metric, g.source) for g in spec.guardrails])
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
    move = labels.Move(
        prompt_id=spec.prompt_id,
        label=spec.label,
        model=spec.model,
        version=spec.candidate,
        reason=spec.reason,
        force=spec.force,
    )
    if move.force and not move.reason.strip():
        raise InvalidArgument("reason", "a forced rollout needs a reason")
    forced = labels.check_gate(store, project_id, move, protected)
    rid = spec.rollout_id or f"{spec.prompt_id}.{spec.label}.{uuid.uuid4().hex[:8]}"
    if store.rollout_states(project_id, rid):
        raise Conflict(f"a rollout named {rid!r} exists already")
    config = spec.model_dump(
        exclude={"prompt_id", "label", "model", "candidate", "reason", "rollout_id"}
    )
    config.update(started_at=now.isoformat(), forced=forced)
    first = {
        "rollout_id": rid,
        "seq": 1,
        "token": uuid.uuid4().hex,
        "prompt_id": spec.prompt_id,
        "label": spec.label,
        "model": spec.model,
        "incumbent": incumbent,
        "candidate": spec.candidate,
        "config": json.dumps(config),
        "state": "running",
        "step": 0,
        "step_started_at": now,
        "action": "start",
        "reason": spec.reason or f"{spec.prompt_id}@{spec.candidate} at {spec.steps[0]:g} %",
        "detail": "{}",
        "key_id": key_id,
    }
    if not store.claim_rollout_event(project_id, first):  # started twice at the same moment
        raise Conflict(f"a rollout named {rid!r} was started meanwhile")
    return get(store, project_id, rid)


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
    to = {"pause": "paused", "resume": "running", "abort": "aborted", "promote": "completed"}
    reason = note or f"{action} by a person"
    steps = json.loads(st["config"])["steps"]
    step = len(steps) - 1 if action == "promote" else None
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
    here = ResponseFilter(experiment=experiment_of(rid, step))
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


def watch(store: Store, project_id: str, st: dict[str, Any], now: datetime) -> str | None:
    """One look at a running rollout; the action taken, if any."""
    plan = plan_of(st)
    lk, app = look(store, project_id, st, plan)
    d = policy.decide(plan, lk)
    if d.action == "wait":
        return None
    detail = {
        "counts": dict(lk.step_counts),
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
    percent = plan.steps[st["step"]]
    cand, inc = f"{st['prompt_id']}@{st['candidate']}", f"{st['prompt_id']}@{st['incumbent']}"
    served = first.get("n_candidate", 0)
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
    """The experiment a response served under this step's split is logged with."""
    return f"{rollout_id}/{step}"


def served_experiment(store: Store, project_id: str, experiment: str) -> float | None:
    """The candidate's percent when `experiment` is a rollout's step, else None."""
    rid, sep, step = experiment.rpartition("/")
    if not sep or not step.isdigit():
        return None
    states = store.rollout_states(project_id, rid)
    if not states:
        return None
    steps = json.loads(states[0]["config"])["steps"]
    return float(steps[int(step)]) if int(step) < len(steps) else None


def experiment_defaults(
    store: Store, project_id: str, experiment: str, control: str, split: str
) -> tuple[str, str, bool]:
    """(control, split, watched): a rollout's step compares against its incumbent with the
    step's split and always-valid inference unless the caller says otherwise."""
    served = served_experiment(store, project_id, experiment)
    if served is None:
        return control, split, False
    default_split = f"candidate:{served:g},incumbent:{100 - served:g}"
    return control or "incumbent", split or default_split, True


def percent_of(st: dict[str, Any]) -> float:
    """The candidate's share of traffic now (a step's percent)."""
    return float(json.loads(st["config"])["steps"][st["step"]])


def serving(
    states: list[dict[str, Any]], label: str, model: str, unit: str
) -> tuple[tuple[str, str, str], dict[str, Any]] | None:
    """((version, variant, experiment), the rollout) when an active rollout splits this
    pointer's traffic."""
    for st in states:
        if st["state"] in ACTIVE and (st["label"], st["model"]) == (label, model):
            percent = percent_of(st)
            variant = arm(
                st["rollout_id"], unit, [("candidate", percent), ("incumbent", 100 - percent)]
            )
            version = st["candidate"] if variant == "candidate" else st["incumbent"]
            return (version, variant, experiment_of(st["rollout_id"], st["step"])), st
    return None


def public(
    store: Store, project_id: str, st: dict[str, Any], *, live: bool = False
) -> dict[str, Any]:
    """A rollout as the API shows it; with `live`, the watch's current estimates."""
    plan = plan_of(st)
    out: dict[str, Any] = {
        "rollout_id": st["rollout_id"],
        "prompt_id": st["prompt_id"],
        "label": st["label"],
        "model": st["model"] or None,
        "incumbent": st["incumbent"],
        "candidate": st["candidate"],
        "state": st["state"],
        "step": st["step"],
        "percent": plan.steps[st["step"]],
        "steps": list(plan.steps),
        "step_started_at": st["step_started_at"].isoformat(),
        "updated_at": st["claimed_at"].isoformat(),
        "reason": st["reason"],
        "config": json.loads(st["config"]),
    }
    if live:
        lk, app = look(store, project_id, st, plan)
        d = policy.decide(plan, lk)
        out["app"] = app
        out["responses_this_step"] = dict(lk.step_counts)
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
