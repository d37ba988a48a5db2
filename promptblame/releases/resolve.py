"""Resolve: which version of a prompt a label serves to a model, from an in-process cache.

Apps resolve on every request, so the answer must not cost a database round trip. Pointers are
cached per (project, prompt) for `ttl` seconds; a move made through this process invalidates
them at once, a move made by another api process is seen when the entry expires. Registered
versions never change text (a different text is a new version), so templates are cached until
evicted.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from promptblame.errors import NotFound
from promptblame.releases.labels import check_label, pointers
from promptblame.releases.rollouts import ACTIVE, arms_of, serving
from promptblame.store import Store

_MAX_VERSIONS = 10_000  # cached templates (each may be large: bounded)


class Miss(Exception):
    """The cache cannot answer without the store (asked with store=None)."""


@dataclass(frozen=True)
class Pointers:
    table: dict[tuple[str, str], str]  # (label, model) → version
    rollouts: list[dict[str, Any]]  # running or paused rollouts of the prompt


class ResolveCache:
    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._pointers: dict[tuple[str, str], tuple[float, Pointers]] = {}
        self._versions: OrderedDict[tuple[str, str, str], dict[str, Any]] = OrderedDict()

    def pointers(self, store: Store | None, project_id: str, prompt_id: str) -> Pointers:
        """{(label, model): version} of one prompt, and its active rollouts."""
        key = (project_id, prompt_id)
        hit = self._pointers.get(key)
        if hit is not None and hit[0] > self._clock():
            return hit[1]
        if store is None:
            raise Miss
        table = {(p["label"], p["model"]): p["to_version"] for p in pointers(store, *key)}
        active = [
            st
            for st in store.rollout_states(project_id)
            if st["prompt_id"] == prompt_id and st["state"] in ACTIVE
        ]
        fresh = Pointers(table, active)
        with self._lock:
            self._pointers[key] = (self._clock() + self.ttl, fresh)
        return fresh

    def version(
        self, store: Store | None, project_id: str, prompt_id: str, version: str
    ) -> dict[str, Any] | None:
        key = (project_id, prompt_id, version)
        with self._lock:
            row = self._versions.get(key)
            if row is not None:
                self._versions.move_to_end(key)
                return row
        if store is None:
            raise Miss
        row = store.get_prompt_version(project_id, prompt_id, version)
        if row is not None:
            with self._lock:
                self._versions[key] = row
                while len(self._versions) > _MAX_VERSIONS:
                    self._versions.popitem(last=False)
        return row

    def invalidate(self, project_id: str, prompt_id: str) -> None:
        with self._lock:
            self._pointers.pop((project_id, prompt_id), None)


def resolve(
    store: Store | None,
    cache: ResolveCache,
    project_id: str,
    prompt_id: str,
    *,
    label: str,
    model: str = "",
    unit: str = "",
) -> dict[str, Any]:
    """The version `label` serves to `model` (its own pointer, else the label's default).

    While a rollout or an experiment splits the pointer's traffic, `unit` (a user, session or
    conversation) decides, stickily, which arm it gets: `variant` says which and `experiment`
    names the rollout's step or the experiment (the app logs both with the response). Without
    one every unit gets the label's version and both are None. With store=None it answers from the
    cache alone or raises Miss (the API does that in the event loop first)."""
    check_label(label)
    cached = cache.pointers(store, project_id, prompt_id)
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
            "arms": [
                {"variant": v, "percent": w, **_version(store, cache, project_id, prompt_id, ver)}
                for v, ver, w in arms_of(st)
            ],
        }
    return {
        **_version(store, cache, project_id, prompt_id, version),
        "prompt_id": prompt_id,
        "label": label,
        "model": chosen[1] or None,
        "variant": variant,
        "experiment": experiment,
        "split": split,
    }


def _version(
    store: Store | None, cache: ResolveCache, project_id: str, prompt_id: str, version: str
) -> dict[str, str]:
    row = cache.version(store, project_id, prompt_id, version)
    if row is None:  # registries only grow; a pointer to a missing version is a broken store
        raise NotFound(f"a label of {prompt_id!r} points to {version!r}, not registered")
    return {"version": version, "template": row["template"], "content_hash": row["content_hash"]}
