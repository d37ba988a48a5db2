"""Annotation queues over the store: apply the config, fill queues, serve items to reviewers,
keep their labels (and the scores made of them), undo.

Serving: a reviewer gets the lowest-ranked item they have not answered, that still needs a
reviewer (1, or 2 on the overlap) counting labels and other reviewers' live leases (5 minutes).
An answered or skipped item is never served to the same reviewer again; undo takes back the
reviewer's latest answer and serves that item again. One lock per process keeps two reviewers
from taking the last place on an item at once (the store has no row locks).

Labels become scores named after the field, source `human:<queue>`: the first reviewer's label
is the item's score; a second reviewer's label (the overlap) feeds human–human agreement.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from promptblame.errors import InvalidArgument, NotFound
from promptblame.review.config import (
    LabelField,
    QueueSpec,
    ReviewConfig,
    TrustRule,
    content_hash,
    from_stored,
)
from promptblame.review.sampling import Item, sample
from promptblame.store import ResponseFilter, Store

LEASE = timedelta(minutes=5)
CANDIDATES = 200_000  # newest responses a refresh samples from
_serve_lock = threading.Lock()

Action = Literal["create", "update", "unchanged", "remove"]


@dataclass(frozen=True)
class Change:
    section: str
    name: str
    action: Action


def source_of(queue: str) -> str:
    return f"human:{queue}"


def current(store: Store, project_id: str) -> ReviewConfig:
    return from_stored(store.review_config(project_id))


def queue_spec(store: Store, project_id: str, queue: str) -> QueueSpec:
    for q in current(store, project_id).queues:
        if q.name == queue:
            return q
    raise NotFound(f"no queue {queue!r}")


def apply(
    store: Store, project_id: str, config: ReviewConfig, *, dry_run: bool = False
) -> list[Change]:
    """Make the stored queues and trust rules the config's; fill the queues."""
    stored = {(r["section"], r["name"]): r for r in store.review_config(project_id)}
    wanted: dict[tuple[str, str], QueueSpec | TrustRule] = {
        **{("queue", q.name): q for q in config.queues},
        **{("trust", t.metric): t for t in config.trust},
    }
    now = datetime.now(UTC)
    changes, rows = [], []
    for (section, name), item in wanted.items():
        h = content_hash(item)
        old = stored.get((section, name))
        action: Action = (
            "create"
            if old is None or old["removed"]
            else ("unchanged" if old["content_hash"] == h else "update")
        )
        changes.append(Change(section, name, action))
        if action != "unchanged":
            rows.append(_row(project_id, section, name, item.model_dump_json(), h, 0, now))
    for (section, name), old in sorted(stored.items()):
        if (section, name) not in wanted and not old["removed"]:
            changes.append(Change(section, name, "remove"))
            rows.append(
                _row(project_id, section, name, old["definition"], old["content_hash"], 1, now)
            )
    if not dry_run:
        store.insert_rows("review_config", rows)
        for q in config.queues:
            refresh(store, project_id, q)
    return changes


def _row(p: str, section: str, name: str, definition: str, h: str, removed: int, now: datetime):  # type: ignore[no-untyped-def]
    return {
        "project_id": p,
        "section": section,
        "name": name,
        "definition": definition,
        "content_hash": h,
        "removed": removed,
        "updated_at": now,
    }


def refresh(store: Store, project_id: str, spec: QueueSpec) -> int:
    """Add the responses the queue's sample now takes; return how many were added. Items stay
    once added (labels refer to them); `max_items` caps the queue."""
    if spec.feed is None:
        rows = store.review_candidates(
            project_id,
            spec.filter.response_filter(),
            stratum=spec.stratify_by,
            limit=CANDIDATES,
        )
        items = sample(
            rows,
            seed=spec.seed,
            rate=spec.sample_rate,
            per_stratum=spec.per_stratum,
            max_items=spec.max_items,
            overlap=spec.overlap,
        )
    else:
        rows = []
        for side, f in _feed_sides(store, project_id, spec):
            rows += [
                (e, side)
                for e, _ in store.review_candidates(project_id, f, stratum="", limit=CANDIDATES)
            ]
        items = sample(
            rows,
            seed=spec.seed,
            per_stratum=spec.feed.per_side,
            max_items=spec.max_items,
            overlap=spec.overlap,
        )
    have = {r["event_id"] for r in store.review_items(project_id, spec.name)}
    room = max(0, spec.max_items - len(have))
    new = [i for i in items if i.event_id not in have][:room]
    now = datetime.now(UTC)
    store.insert_rows(
        "review_items",
        [
            {
                "project_id": project_id,
                "queue": spec.name,
                "event_id": i.event_id,
                "stratum": i.stratum,
                "rank": i.rank,
                "needed": i.needed,
                "added_at": now,
            }
            for i in new
        ],
    )
    return len(new)


def _feed_sides(store: Store, project_id: str, spec: QueueSpec) -> list[tuple[str, ResponseFilter]]:
    """(side, filter) of a feed: an incident's window before/after its shift, or a rollout's
    incumbent/candidate prompt versions."""
    assert spec.feed is not None
    feed, base = spec.feed, spec.filter.response_filter()
    if feed.incident:
        inc = store.incident(project_id, feed.incident)
        if inc is None:
            raise InvalidArgument("feed.incident", f"no incident {feed.incident!r}")
        start, w = inc["shift_start"], timedelta(hours=feed.window_hours)
        dims = {k: inc[k] for k in ("app", "route", "environment")}
        return [
            ("before", _with(base, **dims, since=start - w, until=start)),
            ("after", _with(base, **dims, since=start, until=start + w)),
        ]
    states = store.rollout_states(project_id, feed.rollout)  # the newest state first
    if not states:
        raise InvalidArgument("feed.rollout", f"no rollout {feed.rollout!r}")
    st = states[0]
    return [
        (side, _with(base, prompt_id=st["prompt_id"], prompt_version=st[side]))
        for side in ("incumbent", "candidate")
    ]


def _with(f: ResponseFilter, **changes: Any) -> ResponseFilter:
    return ResponseFilter(**{**f.__dict__, **changes})


# -- reviewing ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ItemState:
    event_id: str
    stratum: str
    rank: float
    needed: int
    labelled_by: tuple[str, ...]


def items(store: Store, project_id: str, queue: str) -> list[ItemState]:
    answers = store.review_answers(project_id, queue)
    by_item: dict[str, list[str]] = {}
    for a in answers:
        if a["action"] == "label":
            by_item.setdefault(a["event_id"], []).append(a["reviewer"])
    return [
        ItemState(
            r["event_id"],
            r["stratum"],
            r["rank"],
            int(r["needed"]),
            tuple(by_item.get(r["event_id"], ())),
        )
        for r in store.review_items(project_id, queue)
    ]


def next_item(
    store: Store, project_id: str, queue: str, reviewer: str, *, key_id: str = ""
) -> Item | None:
    """The item to show this reviewer now (leased to them), or None when nothing is left."""
    queue_spec(store, project_id, queue)
    with _serve_lock:
        now = datetime.now(UTC)
        mine: dict[str, str] = {}
        taken: dict[str, int] = {}
        for a in store.review_answers(project_id, queue):
            if a["reviewer"] == reviewer:
                mine[a["event_id"]] = a["action"]
            elif a["action"] == "label" or (a["action"] == "lease" and now - _utc(a["ts"]) < LEASE):
                taken[a["event_id"]] = taken.get(a["event_id"], 0) + 1
        rows = store.review_items(project_id, queue)
        chosen = next((r for r in rows if mine.get(r["event_id"]) == "lease"), None)
        if chosen is None:
            chosen = next(
                (
                    r
                    for r in rows
                    if mine.get(r["event_id"]) in (None, "undone")
                    and taken.get(r["event_id"], 0) < int(r["needed"])
                ),
                None,
            )
            if chosen is None:
                return None
            _answer(store, project_id, queue, chosen["event_id"], reviewer, "lease", key_id=key_id)
        return Item(chosen["event_id"], chosen["stratum"], chosen["rank"], int(chosen["needed"]))


def _utc(ts: datetime) -> datetime:
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def parse_labels(spec: QueueSpec, raw: Mapping[str, Any]) -> dict[str, float]:
    """The answer as stored numbers; InvalidArgument names the first bad field."""
    for name in raw:
        if spec.field(name) is None:
            known = ", ".join(f.name for f in spec.fields)
            raise InvalidArgument(f"labels.{name}", f"not a field of queue {spec.name!r} ({known})")
    out = {}
    for f in spec.fields:
        value = raw.get(f.name)
        if value is None or value == "":
            if f.required:
                raise InvalidArgument(f"labels.{f.name}", "required")
            continue
        out[f.name] = f.parse(value)
    return out


def submit(
    store: Store,
    project_id: str,
    queue: str,
    *,
    event_id: str,
    reviewer: str,
    key_id: str,
    labels: Mapping[str, Any] | None = None,
    comment: str = "",
    skip: bool = False,
) -> dict[str, float]:
    """Record a reviewer's label (or skip) of an item; returns the stored values."""
    spec = queue_spec(store, project_id, queue)
    if not store.is_review_item(project_id, queue, event_id):
        raise NotFound(f"{event_id!r} is not an item of queue {queue!r}")
    values = {} if skip else parse_labels(spec, labels or {})
    if len(comment) > 4000:
        raise InvalidArgument("comment", "at most 4000 characters")
    _answer(
        store,
        project_id,
        queue,
        event_id,
        reviewer,
        "skip" if skip else "label",
        labels=values,
        comment=comment,
        key_id=key_id,
    )
    sync_scores(store, project_id, spec, event_id)
    return values


def undo(store: Store, project_id: str, queue: str, *, reviewer: str, key_id: str) -> str | None:
    """Take back the reviewer's latest label or skip in the queue: the item is theirs to answer
    again (leased to them, served next). Returns its event id, None if nothing to undo."""
    spec = queue_spec(store, project_id, queue)
    answered = [
        a
        for a in store.review_answers(project_id, queue)
        if a["reviewer"] == reviewer and a["action"] in ("label", "skip")
    ]
    if not answered:
        return None
    last = max(answered, key=lambda a: a["ts"])
    with _serve_lock:
        for a in store.review_answers(project_id, queue):  # one open item at a time
            if a["reviewer"] == reviewer and a["action"] == "lease":
                _answer(store, project_id, queue, a["event_id"], reviewer, "undone", key_id=key_id)
        _answer(store, project_id, queue, last["event_id"], reviewer, "lease", key_id=key_id)
    sync_scores(store, project_id, spec, last["event_id"])
    return str(last["event_id"])


def _answer(
    store: Store,
    project_id: str,
    queue: str,
    event_id: str,
    reviewer: str,
    action: str,
    *,
    labels: Mapping[str, float] | None = None,
    comment: str = "",
    key_id: str = "",
) -> None:
    store.insert_rows(
        "review_labels",
        [
            {
                "project_id": project_id,
                "queue": queue,
                "event_id": event_id,
                "reviewer": reviewer,
                "action": action,
                "labels": json.dumps(labels or {}),
                "comment": comment,
                "key_id": key_id,
                "ts": datetime.now(UTC),
            }
        ],
    )


def sync_scores(store: Store, project_id: str, spec: QueueSpec, event_id: str) -> None:
    """The item's scores `<field>` / `human:<queue>`: the first reviewer's current label."""
    labels = [
        a
        for a in store.review_answers(project_id, spec.name, event_id=event_id)
        if a["action"] == "label"
    ]
    first = min(labels, key=lambda a: a["ts"]) if labels else None
    values = json.loads(first["labels"]) if first else {}
    now = datetime.now(UTC)
    source = source_of(spec.name)
    stored = {
        s["name"] for s in store.response_scores(project_id, event_id) if s["source"] == source
    }
    rows = []
    for f in spec.fields:
        if f.name in values:
            note = f"{first['reviewer']}: {first['comment']}" if first else ""
            rows.append(
                {
                    "project_id": project_id,
                    "event_id": event_id,
                    "name": f.name,
                    "source": source,
                    "value": float(values[f.name]),
                    "comment": note.strip().rstrip(":"),
                    "ts": now,
                    "received_at": now,
                }
            )
        elif f.name in stored:  # a DELETE is a mutation: only when there is a score to take
            store.delete_score(project_id, event_id, f.name, source)
    store.insert_rows("scores", rows)


def labels(store: Store, project_id: str, queue: str = "") -> list[dict[str, Any]]:
    """Every reviewer's current label (skips included), as shown by the API."""
    cfg = {q.name: q for q in current(store, project_id).queues}
    out = []
    for a in store.review_answers(project_id, queue):
        if a["action"] not in ("label", "skip") or a["queue"] not in cfg:
            continue
        values = json.loads(a["labels"])
        spec = cfg[a["queue"]]
        out.append(
            {
                "queue": a["queue"],
                "event_id": a["event_id"],
                "reviewer": a["reviewer"],
                "action": a["action"],
                "labels": values,
                "shown": {k: _shown(spec.field(k), v) for k, v in values.items()},
                "comment": a["comment"],
                "ts": a["ts"],
            }
        )
    return out


def _shown(f: LabelField | None, v: float) -> str:
    return f.shown(v) if f else f"{v:g}"
