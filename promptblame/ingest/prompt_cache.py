"""The client's prompt cache: resolve a prompt by label without ever making the app wait long.

Why it is built this way (after Langfuse's prompt cache):
- A fresh entry (younger than `ttl`) is returned at once: a resolve costs a dict lookup. During
  a rollout the answer carries the split, and each unit's arm is computed here with the
  server's hash: one cached answer serves every unit, stickily.
- An expired entry is still returned at once (stale-while-revalidate) and one background
  refresh per key fetches the new version; a failed refresh keeps the old copy, a 404 evicts it.
- A miss fetches in a worker thread and waits at most `timeout` seconds, whatever the server
  does (a server that accepts the connection and never answers included). When the server
  cannot answer in time: the last good copy (kept even after expiry), else the bundled fallback
  file, else the `fallback` text given to `get_prompt`, else `PromptUnavailable`. A fallback is
  flagged `is_fallback`, and responses logged with it say so in their tags.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from promptblame.releases.splits import arm

_VAR = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


class PromptNotFound(LookupError):
    """The server says the prompt or label does not exist (404)."""


class PromptUnavailable(RuntimeError):
    """Neither the server (in time), a cached copy nor a fallback could give the prompt."""


@dataclass(frozen=True)
class Prompt:
    """A prompt version as served: what `trace(prompt=...)` logs with the response."""

    prompt_id: str
    version: str
    template: str
    label: str
    content_hash: str = ""
    model: str | None = None  # the model pointer that served it (None: the label's default)
    variant: str | None = None  # the arm of a rollout or experiment that served it
    experiment: str | None = None  # that rollout's id
    is_fallback: bool = False
    variables: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        names = tuple(dict.fromkeys(_VAR.findall(self.template)))
        object.__setattr__(self, "variables", names)

    def format(self, **values: Any) -> str:
        """The template with each `{{name}}` replaced; single braces (JSON examples) stay."""
        missing = [v for v in self.variables if v not in values]
        if missing:
            raise KeyError(
                f"prompt {self.prompt_id}@{self.version} needs {', '.join(missing)}"
                f" (variables: {', '.join(self.variables)})"
            )
        return _VAR.sub(lambda m: str(values[m.group(1)]), self.template)

    @classmethod
    def from_resolve(
        cls, doc: dict[str, Any], *, unit: str = "", is_fallback: bool = False
    ) -> Prompt:
        """The prompt a resolve answer serves to `unit`: during a rollout the unit's arm is
        computed here, as the server would (the same hash), so one cached answer serves every
        unit stickily."""
        variant = arm_of(doc, unit)
        if variant:
            split = doc["split"]
            served = next(a for a in split["arms"] if a["variant"] == variant)
            doc = {**doc, **served, "experiment": split["experiment"]}
        return cls(
            prompt_id=str(doc["prompt_id"]),
            version=str(doc.get("version") or ""),
            template=str(doc["template"]),
            label=str(doc.get("label") or ""),
            content_hash=str(doc.get("content_hash") or ""),
            model=doc.get("model"),
            variant=doc.get("variant"),
            experiment=doc.get("experiment"),
            is_fallback=is_fallback,
        )


Key = tuple[str, str, str]  # prompt id, label, model


def arm_of(doc: dict[str, Any], unit: str) -> str | None:
    """The unit's arm when the answer carries a rollout's or experiment's split (the server's
    hash)."""
    split = doc.get("split")
    if not split or not unit:
        return None
    return arm(split["seed"], unit, [(a["variant"], float(a["percent"])) for a in split["arms"]])


class _Entry:
    """A cached resolve answer and the Prompt of each arm, made once."""

    __slots__ = ("doc", "expires", "prompts")

    def __init__(self, doc: dict[str, Any], expires: float) -> None:
        self.doc, self.expires = doc, expires
        self.prompts: dict[str | None, Prompt] = {}

    def prompt(self, unit: str) -> Prompt:
        variant = arm_of(self.doc, unit)
        p = self.prompts.get(variant)
        if p is None:
            p = self.prompts[variant] = Prompt.from_resolve(self.doc, unit=unit)
        return p


class PromptCache:
    def __init__(
        self,
        http: httpx.Client,
        *,
        ttl: float = 60.0,
        timeout: float = 2.0,
        fallback_file: str | Path | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._http, self.ttl, self.timeout, self._clock = http, ttl, timeout, clock
        self._entries: dict[Key, _Entry] = {}
        self._fetching: dict[Key, Future[_Entry]] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="promptblame-prompts")
        self._bundled = _read_fallbacks(fallback_file) if fallback_file else {}

    def get(
        self, prompt_id: str, *, label: str, model: str = "", unit: str = "", fallback: str | None
    ) -> Prompt:
        key = (prompt_id, label, model)
        with self._lock:
            hit = self._entries.get(key)
        if hit is not None:
            if hit.expires <= self._clock():
                self._fetch(key)  # stale: refresh in the background, serve the old copy
            return hit.prompt(unit)
        try:
            fetched: _Entry | None = self._fetch(key).result(timeout=self.timeout)
        except FutureTimeout:
            fetched = None
        except PromptNotFound:
            raise
        except Exception:  # the server is unreachable or answered an error: fall back
            fetched = None
        if fetched is not None:
            return fetched.prompt(unit)
        return self._fallback(key, fallback, unit)

    def _fetch(self, key: Key) -> Future[_Entry]:
        """One fetch per key at a time; the answer lands in the cache whenever it arrives."""
        with self._lock:
            running = self._fetching.get(key)
            if running is not None:
                return running
            future = self._pool.submit(self._load, key)
            self._fetching[key] = future
        return future

    def _load(self, key: Key) -> _Entry:
        prompt_id, label, model = key
        try:
            params = {"label": label, **({"model": model} if model else {})}
            r = self._http.get(f"/v1/prompts/{quote(prompt_id, safe='')}/resolve", params=params)
            if r.status_code == 404:
                with self._lock:
                    self._entries.pop(key, None)
                raise PromptNotFound(r.json().get("detail", f"no prompt {prompt_id!r}"))
            r.raise_for_status()
            entry = _Entry(r.json(), self._clock() + self.ttl)
            with self._lock:
                self._entries[key] = entry
            return entry
        finally:
            with self._lock:
                self._fetching.pop(key, None)

    def _fallback(self, key: Key, text: str | None, unit: str) -> Prompt:
        prompt_id, label, _ = key
        with self._lock:
            stale = self._entries.get(key)
        if stale is not None:
            return stale.prompt(unit)
        bundled = self._bundled.get(key) or self._bundled.get((prompt_id, label, ""))
        if bundled is not None:
            return bundled
        if text is not None:
            return Prompt(prompt_id, "", text, label, is_fallback=True)
        raise PromptUnavailable(
            f"prompt {prompt_id!r} label {label!r}: the server did not answer within"
            f" {self.timeout} s and there is no cached copy or fallback"
        )

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _read_fallbacks(path: str | Path) -> dict[Key, Prompt]:
    """A JSON list of resolve answers (what GET /v1/prompts/{id}/resolve returns), e.g. saved
    at build time and shipped with the app."""
    docs = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(docs, list):
        raise ValueError(f"{path}: expected a JSON list of resolve answers")
    out = {}
    for doc in docs:
        p = Prompt.from_resolve(doc, is_fallback=True)
        out[(p.prompt_id, p.label, p.model or "")] = p
    return out
