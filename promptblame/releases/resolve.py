"""Resolve: which version of a prompt a label serves to a model, from an in-process cache.

Apps resolve on every request, so the answer must not cost a database round trip. Pointers are
cached per (project, prompt) for `ttl` seconds and re-read in the background while in use (see
refresh_ahead); a move made through this process invalidates them at once, a move made by another
api process is seen within `ttl`. Registered versions never change text (a different text is a
new version), so templates are cached until evicted.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from promptblame.errors import NotFound
from promptblame.refresh_ahead import Miss, RefreshAhead
from promptblame.releases.labels import check_label, pointers
from promptblame.releases.rollouts import ACTIVE, arms_of, serving
from promptblame.store import Store

__all__ = ["Miss", "Pointers", "ResolveCache", "resolve"]


@dataclass(frozen=True)
class Pointers:
    table: dict[tuple[str, str], str]  # (label, model) → version
    rollouts: list[dict[str, Any]]  # running or paused rollouts of the prompt


class ResolveCache:
    def __init__(
        self, store: Store, ttl: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._store = store
        self.pointers = RefreshAhead(ttl, self._pointers, clock=clock)
        # text of a version never changes: kept until evicted (a missing one raises, not kept)
        self.versions = RefreshAhead(float("inf"), self._version, clock=clock)

    def invalidate(self, project_id: str, prompt_id: str) -> None:
        self.pointers.invalidate((project_id, prompt_id))

    def _pointers(self, key: tuple[str, str]) -> Pointers:
        """{(label, model): version} of one prompt, and its active rollouts."""
        project_id, prompt_id = key
        table = {(p["label"], p["model"]): p["to_version"] for p in pointers(self._store, *key)}
        active = [
            st
            for st in self._store.rollout_states(project_id)
            if st["prompt_id"] == prompt_id and st["state"] in ACTIVE
        ]
        return Pointers(table, active)

    def _version(self, key: tuple[str, str, str]) -> dict[str, str]:
        row = self._store.get_prompt_version(*key)
        if row is None:  # registries only grow; a pointer to a missing version is a broken store
            raise NotFound(f"a label of {key[1]!r} points to {key[2]!r}, not registered")
        return {"version": key[2], "template": row["template"], "content_hash": row["content_hash"]}


def resolve(
    cache: ResolveCache,
    project_id: str,
    prompt_id: str,
    *,
    label: str,
    model: str = "",
    unit: str = "",
    block: bool = True,
) -> dict[str, Any]:
    """The version `label` serves to `model` (its own pointer, else the label's default).

    While a rollout or an experiment splits the pointer's traffic, `unit` (a user, session or
    conversation) decides, stickily, which arm it gets: `variant` says which and `experiment`
    names the rollout's step or the experiment (the app logs both with the response). Without
    one every unit gets the label's version and both are None. With block=False it answers from
    the cache alone or raises Miss (the API does that in the event loop first)."""
    check_label(label)
    cached = cache.pointers.get((project_id, prompt_id), block=block)

    def text(version: str) -> dict[str, str]:
        return cache.versions.get((project_id, prompt_id, version), block=block)

    table = cached.table
    chosen = next((k for k in ((label, model), (label, "")) if k in table), None)
    if chosen is None:
        labels = sorted({lab for lab, _ in table})
        if not labels:
            raise NotFound(f"prompt {prompt_id!r} has no labels (move one with PUT .../labels/)")
        raise NotFound(
            f"prompt {prompt_id!r} has no label {label!r}"
            + (f" for model {model!r} or by default" if model else " by default")
            + f"; its labels: {', '.join(labels)}"
        )
    version, variant, experiment, split = table[chosen], None, None, None
    found = serving(cached.rollouts, *chosen, unit)
    if found is not None:
        (version, variant, experiment), st = found
        split = {  # for clients that assign their units themselves (the Python client does)
            "seed": st["rollout_id"],
            "experiment": experiment,
            "arms": [{"variant": v, "percent": w, **text(ver)} for v, ver, w in arms_of(st)],
        }
    return {
        **text(version),
        "prompt_id": prompt_id,
        "label": label,
        "model": chosen[1] or None,
        "variant": variant,
        "experiment": experiment,
        "split": split,
    }
