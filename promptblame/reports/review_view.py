"""What the review pages show, gathered from the store (templates only lay it out).

The item page never carries automated scores of the item being reviewed (no anchoring); the
scores of the item just answered come with the next page, next to the reviewer's own answer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from promptblame.review import calibration, queues
from promptblame.review.config import LabelField, QueueSpec
from promptblame.store import Store

CONTROL_KEYS = {"s", "u", "c"}  # skip, undo, comment


@dataclass(frozen=True)
class FieldView:
    name: str
    kind: str
    question: str
    required: bool
    choices: list[tuple[str, str, str]]  # (form value, shown text, key or "")
    low: float
    high: float


def field_views(fields: list[LabelField]) -> list[FieldView]:
    """Each field with its keyboard keys: p/f for pass/fail, digits for a scale (its own
    numbers) or categories (1…n); a key already taken by an earlier field is left off."""
    used = set(CONTROL_KEYS)
    out = []
    for f in fields:
        if f.kind == "pass_fail":
            pairs = [("pass", "pass", "p"), ("fail", "fail", "f")]
        elif f.kind == "categories":
            pairs = [(c, c, str(i + 1)) for i, c in enumerate(f.categories)]
        elif f.kind == "scale":
            pairs = [(text, text, text if len(text) == 1 else "") for _, text in f.choices()]
        else:
            pairs = []
        keys = [k for _, _, k in pairs]
        if any(k in used or not k for k in keys):
            pairs = [(v, t, "") for v, t, _ in pairs]
        used.update(k for _, _, k in pairs if k)
        out.append(FieldView(f.name, f.kind, f.question, f.required, pairs, f.low, f.high))
    return out


def queues_view(store: Store, project_id: str) -> dict[str, Any]:
    cfg = queues.current(store, project_id)
    rows = []
    for q in cfg.queues:
        items = queues.items(store, project_id, q.name)
        rows.append(
            {
                "spec": q,
                "items": len(items),
                "done": sum(len(i.labelled_by) >= i.needed for i in items),
                "labels": sum(len(i.labelled_by) for i in items),
                "overlap": sum(i.needed == 2 for i in items),
                "reviewers": sorted({r for i in items for r in i.labelled_by}),
            }
        )
    return {"queues": rows, "trust": cfg.trust}


@dataclass
class ItemView:
    spec: QueueSpec
    fields: list[FieldView]
    item: dict[str, Any] | None
    stratum: str = ""
    needed: int = 1
    mine: int = 0
    total: int = 0
    done: int = 0
    can_undo: bool = False
    last: dict[str, Any] | None = None
    tags: list[tuple[str, str]] = field(default_factory=list)


def item_view(
    store: Store,
    project_id: str,
    queue: str,
    *,
    reviewer: str,
    key_id: str,
    serve: bool,
    last: str = "",
) -> ItemView:
    spec = queues.queue_spec(store, project_id, queue)
    item = None
    if serve:
        item = queues.next_item(store, project_id, queue, reviewer, key_id=key_id)
        if item is None and queues.refresh(store, project_id, spec):
            item = queues.next_item(store, project_id, queue, reviewer, key_id=key_id)
    states = queues.items(store, project_id, queue)
    answers = store.review_answers(project_id, queue)
    mine = [a for a in answers if a["reviewer"] == reviewer and a["action"] in ("label", "skip")]
    view = ItemView(
        spec=spec,
        fields=field_views(spec.fields),
        item=None,
        mine=sum(a["action"] == "label" for a in mine),
        total=len(states),
        done=sum(len(s.labelled_by) >= s.needed for s in states),
        can_undo=bool(mine),
    )
    if item is not None:
        rows = store.responses_by_id(project_id, [item.event_id])
        if rows:
            view.item = rows[0]
            view.tags = sorted(dict(rows[0]["tags"]).items())
        view.stratum, view.needed = item.stratum, item.needed
    if last:
        view.last = _last(store, project_id, spec, reviewer, last)
    return view


def _last(
    store: Store, project_id: str, spec: QueueSpec, reviewer: str, event_id: str
) -> dict[str, Any] | None:
    """The reviewer's answer on an item they labelled, beside the automated scores of it."""
    answers = [
        a
        for a in store.review_answers(project_id, spec.name, event_id=event_id)
        if a["reviewer"] == reviewer and a["action"] == "label"
    ]
    if not answers:
        return None
    values = json.loads(answers[-1]["labels"])
    names = {f.name for f in spec.fields}
    known = calibration.flags(store, project_id)
    by_metric = calibration.rules(store, project_id)
    scores = []
    for s in store.response_scores(project_id, event_id):
        if s["name"] in names and not s["source"].startswith("human:"):
            trust = calibration.trust_of(
                store, project_id, s["name"], s["source"], known, by_metric
            )
            scores.append({**s, "trust": trust})
    return {
        "event_id": event_id,
        "yours": [(f.name, f.shown(values[f.name])) for f in spec.fields if f.name in values],
        "scores": scores,
    }


def agreement_view(store: Store, project_id: str, metric: str = "") -> dict[str, Any]:
    return {"metrics": calibration.report(store, project_id, metric), "metric": metric}
