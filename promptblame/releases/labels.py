"""Labels: movable pointers (project, prompt, label, model) → prompt version.

A move is compare-and-set: the mover says which version it expects the label to hold, and a
mismatch is a conflict naming the current one. ClickHouse has no row locks, so a move claims the
pointer's next sequence number in the append-only `label_events` table and reads back which
claim won that number (the store decides by the database clock); in one process a lock makes
the claims of concurrent moves take turns, so a loser never needs to retry.

A pointer may be per model (`model`), with a default ('') for every model without one: one
wording can behave differently on different models. Labels named in `PROTECTED_LABELS` accept
only a version with a passing gate result for that (version, model) on record, unless an admin
forces the move with a reason the history keeps; going back to a version the label held before
(a rollback) needs no new gate.
"""

from __future__ import annotations

import hashlib
import re
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from promptblame.errors import Conflict, InvalidArgument, LabelConflict, NotFound

if TYPE_CHECKING:  # the CLI's --url commands use this module without opening a store
    from promptblame.store import Store

LABEL_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
_LABEL_RE = re.compile(LABEL_PATTERN)
_CLAIM_ATTEMPTS = 8  # a move without `expected` that keeps losing its seq gives up after these
_MOVE_LOCK = threading.Lock()  # label moves of this process take turns (they are rare)
ACTIVE_ROLLOUT = ("running", "paused")  # a rollout in these states owns its label's traffic


@dataclass(frozen=True, kw_only=True)
class Move:
    """A requested label move. `expected`: the version the mover believes the label holds
    ('' = the label must not exist yet; None = no check)."""

    prompt_id: str
    label: str
    version: str
    model: str = ""
    expected: str | None = None
    reason: str = ""
    force: bool = False
    key_id: str = ""
    incident_id: str = ""


def check_label(label: str, field: str = "label") -> str:
    if not _LABEL_RE.match(label):
        raise InvalidArgument(
            field,
            f"{label!r} is not a label name: 1-64 of a-z 0-9 . _ -, starting with a letter or"
            " digit (e.g. production, staging, canary-eu)",
        )
    return label


def pointers(store: Store, project_id: str, prompt_id: str = "") -> list[dict[str, Any]]:
    """The current pointers (newest move of each), of one prompt or of all."""
    return store.label_pointers(project_id, prompt_id)


def current(
    store: Store, project_id: str, prompt_id: str, label: str, model: str
) -> dict[str, Any] | None:
    for p in pointers(store, project_id, prompt_id):
        if p["label"] == label and p["model"] == model:
            return p
    return None


def held_before(store: Store, project_id: str, prompt_id: str, label: str, model: str) -> set[str]:
    """Every version this pointer has held."""
    return {
        v
        for e in store.label_history(project_id, prompt_id, label)
        if e["model"] == model
        for v in (e["from_version"], e["to_version"])
        if v
    }


def move(store: Store, project_id: str, m: Move, *, protected: frozenset[str]) -> dict[str, Any]:
    """Apply `m`; returns {moved, from, to, seq, forced, ...}. Raises InvalidArgument (bad name,
    unregistered version, protected label without a passing gate, force without a reason),
    LabelConflict (`expected` is not what the label holds)."""
    check_label(m.label)
    if m.force and not m.reason.strip():
        raise InvalidArgument("reason", "a forced move needs a reason (the history keeps it)")
    if store.get_prompt_version(project_id, m.prompt_id, m.version) is None:
        raise InvalidArgument(
            "version",
            f"{m.prompt_id}@{m.version} is not registered; register it first"
            f" (PUT /v1/prompts/{m.prompt_id}/versions/{m.version} or `promptblame prompts push`)",
        )
    busy = [
        r
        for r in store.rollout_states(project_id)
        if r["state"] in ACTIVE_ROLLOUT
        and (r["prompt_id"], r["label"], r["model"]) == (m.prompt_id, m.label, m.model)
    ]
    if busy:
        raise Conflict(
            f"rollout {busy[0]['rollout_id']} is {busy[0]['state']} on label {m.label!r}:"
            " abort or promote it before moving the label"
        )
    with _MOVE_LOCK:
        for _ in range(_CLAIM_ATTEMPTS):
            now = current(store, project_id, m.prompt_id, m.label, m.model)
            held = now["to_version"] if now else ""
            _check_expected(m, held)
            if held == m.version:
                return _answer(m, now, moved=False)
            forced = check_gate(store, project_id, m, protected)
            claim = {
                "prompt_id": m.prompt_id,
                "label": m.label,
                "model": m.model,
                "seq": (now["seq"] if now else 0) + 1,
                "token": uuid.uuid4().hex,
                "from_version": held,
                "to_version": m.version,
                "key_id": m.key_id,
                "reason": m.reason,
                "forced": int(forced),
                "incident_id": m.incident_id,
            }
            if store.claim_label_move(project_id, claim):
                return _answer(m, claim, moved=True)
    raise LabelConflict(
        f"label {m.label!r} of {m.prompt_id!r} kept moving under this request; try again",
        current=held,
    )


def _check_expected(m: Move, held: str) -> None:
    if m.expected is not None and m.expected != held:
        now = f"points to {held!r}" if held else "does not exist yet"
        raise LabelConflict(
            f"label {m.label!r} of prompt {m.prompt_id!r}{_for(m.model)} {now}, not"
            f" {m.expected!r}; nothing moved (read it again, then move with expected={held!r})",
            current=held,
        )


def check_gate(store: Store, project_id: str, m: Move, protected: frozenset[str]) -> bool:
    """True when the move is forced past the gate rule (recorded as forced)."""
    if m.label not in protected:
        return False
    if m.version in held_before(store, project_id, m.prompt_id, m.label, m.model):
        return False  # back to a version it served before (a rollback): no new gate
    if store.passing_gates(project_id, prompt_id=m.prompt_id, version=m.version, model=m.model):
        return False
    if m.force:
        return True
    raise InvalidArgument(
        "version",
        f"label {m.label!r} is protected: {m.prompt_id}@{m.version} has no passing gate result"
        f"{_for(m.model)} on record; run `promptblame gate` on its eval run (a pass is kept),"
        " or force the move with a reason",
    )


def _for(model: str) -> str:
    return f" for model {model!r}" if model else ""


def _answer(m: Move, row: Mapping[str, Any] | None, *, moved: bool) -> dict[str, Any]:
    return {
        "prompt_id": m.prompt_id,
        "label": m.label,
        "model": m.model or None,
        "moved": moved,
        "from": row["from_version"] if moved and row else m.version,
        "to": m.version,
        "seq": row["seq"] if row else 0,
        "forced": bool(row and moved and row["forced"]),
        "reason": m.reason,
        "incident_id": m.incident_id or None,
    }


def previous_version(
    store: Store, project_id: str, prompt_id: str, label: str, model: str
) -> tuple[str, str]:
    """(held now, held before the last move): what a rollback moves between."""
    now = current(store, project_id, prompt_id, label, model)
    if now is None:
        raise NotFound(f"prompt {prompt_id!r} has no label {label!r}{_for(model)}")
    if not now["from_version"]:
        raise InvalidArgument(
            "label",
            f"label {label!r} of {prompt_id!r}{_for(model)} has held only"
            f" {now['to_version']!r}: nothing to roll back to",
        )
    return now["to_version"], now["from_version"]


def register(
    store: Store,
    project_id: str,
    prompt_id: str,
    version: str,
    template: str,
    *,
    author: str = "",
    tags: Sequence[str] = (),
) -> tuple[dict[str, Any], bool]:
    """(the stored version, whether it is new). Same text again: unchanged; other text under a
    registered version: Conflict (a changed wording is a new version)."""
    digest = content_hash(template)
    existing = store.get_prompt_version(project_id, prompt_id, version)
    if existing is not None:
        if existing["content_hash"] != digest:
            raise Conflict(
                f"prompt {prompt_id!r} version {version!r} is already registered with different"
                f" text (sha256 {existing['content_hash'][:12]}…); register a new version"
            )
        return existing, False
    store.put_prompt_version(
        project_id,
        prompt_id=prompt_id,
        version=version,
        template=template,
        content_hash=digest,
        author=author,
        labels=tags,
        created_at=datetime.now(UTC),
    )
    stored = store.get_prompt_version(project_id, prompt_id, version)
    assert stored is not None
    return stored, True


def content_hash(template: str) -> str:
    """What the registry keys a version's text by."""
    return hashlib.sha256(template.encode()).hexdigest()


def public(row: Mapping[str, Any], protected: frozenset[str]) -> dict[str, Any]:
    """A pointer or history row as the API shows it."""
    return {
        "prompt_id": row["prompt_id"],
        "label": row["label"],
        "model": row["model"] or None,
        "version": row["to_version"],
        "from": row["from_version"] or None,
        "seq": row["seq"],
        "at": row["claimed_at"].isoformat(),
        "key_id": row["key_id"],
        "reason": row["reason"],
        "forced": bool(row["forced"]),
        "incident_id": row["incident_id"] or None,
        "protected": row["label"] in protected,
    }
