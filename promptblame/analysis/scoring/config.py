"""Evaluators as config: the `evaluators.yaml` format, its validation, and the plan that turns
the stored set into the file's set.

A definition's *version* is fixed by what decides its values — kind and params. Changing them
makes a new version (scores carry `evaluator:<name>@<version>`, so a changed evaluator never
looks like a quality shift of the app); changing filter, sample rate or enabled does not.
Going back to an earlier definition reuses its version.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from promptblame.analysis.scoring.registry import KINDS, parse_params
from promptblame.configfile import Lines, Scope, problem, problems, read_yaml
from promptblame.errors import ConfigInvalid, Problem


class EvaluatorSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")]
    kind: str
    params: dict[str, Any] = {}
    filter: Scope = Scope()
    sample_rate: Annotated[float, Field(gt=0, le=1)] = 1.0
    enabled: bool = True
    description: Annotated[str, Field(max_length=2000)] = ""

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, v: str) -> str:
        if v not in KINDS:
            raise ValueError(f"unknown kind; one of {', '.join(sorted(KINDS))}")
        return v

    def content_hash(self) -> str:
        """Hash of what decides the values: kind + params in canonical form."""
        params = parse_params(self.kind, self.params).model_dump(mode="json")
        canonical = json.dumps({"kind": self.kind, "params": params}, sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def settings_dict(self) -> dict[str, Any]:
        return {
            "filter": self.filter.model_dump(),
            "sample_rate": self.sample_rate,
            "enabled": self.enabled,
            "description": self.description,
        }


def validate(doc: Any, lines: Lines | None = None) -> list[EvaluatorSpec]:
    """`{"evaluators": [...]}` → specs; every problem named by field (and line, from YAML)."""
    lines = lines or {}
    found: list[Problem] = []
    if not isinstance(doc, dict) or not isinstance(doc.get("evaluators"), list):
        raise ConfigInvalid([Problem("evaluators", "the file must hold `evaluators: [...]`", 1)])
    for key in sorted(set(doc) - {"evaluators"}):
        found.append(problem(lines, (key,), "unknown top-level field"))
    specs: list[EvaluatorSpec] = []
    seen: set[str] = set()
    for i, item in enumerate(doc["evaluators"]):
        base = ("evaluators", i)
        try:
            spec = EvaluatorSpec.model_validate(item)
            parse_params(spec.kind, spec.params)
        except ValidationError as exc:
            inner = exc.title != EvaluatorSpec.__name__  # the kind's params failed
            found += problems(lines, (*base, "params") if inner else base, exc)
            continue
        if spec.name in seen:
            found.append(problem(lines, (*base, "name"), f"{spec.name!r} is defined twice"))
            continue
        seen.add(spec.name)
        specs.append(spec)
    if found:
        raise ConfigInvalid(found)
    return specs


def load_yaml(path: Path) -> list[EvaluatorSpec]:
    """Read and validate an evaluators file. A reference evaluator's `dataset_file` (JSON lines
    of {case_id, expected_output}, relative to the file) is read into its params, so the stored
    definition — and its version — covers the dataset."""
    doc, lines = read_yaml(path)
    if isinstance(doc, dict) and isinstance(doc.get("evaluators"), list):
        for i, item in enumerate(doc["evaluators"]):
            params = item.get("params") if isinstance(item, dict) else None
            if isinstance(params, dict) and "dataset_file" in params:
                loc = ("evaluators", i, "params", "dataset_file")
                try:
                    params["dataset"] = _read_dataset(path.parent / str(params.pop("dataset_file")))
                except (OSError, ValueError) as exc:
                    raise ConfigInvalid([problem(lines, loc, str(exc))]) from None
    return validate(doc, lines)


def _read_dataset(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for n, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
            out[str(row["case_id"])] = str(row["expected_output"])
        except (ValueError, KeyError, TypeError):
            raise ValueError(
                f'{path.name} line {n}: expected {{"case_id": ..., "expected_output": ...}}'
            ) from None
    return out


Action = Literal["create", "new_version", "update", "unchanged", "remove"]


@dataclass(frozen=True)
class Change:
    name: str
    action: Action
    version: int
    detail: str = ""


def plan(
    desired: Sequence[EvaluatorSpec],
    current: Mapping[str, Mapping[str, Any]],
    versions: Mapping[str, Mapping[str, int]],
) -> list[Change]:
    """What applying `desired` does. `current`: name → stored row (version, content_hash,
    filter, sample_rate, enabled, description, removed); `versions`: name → {hash: version}."""
    changes: list[Change] = []
    for spec in desired:
        h = spec.content_hash()
        known = versions.get(spec.name, {})
        version = known.get(h) or max(known.values(), default=0) + 1
        cur = current.get(spec.name)
        if cur is None or cur["removed"]:
            detail = "back to an earlier definition" if h in known else ""
            changes.append(Change(spec.name, "create", version, detail))
        elif cur["content_hash"] != h:
            changes.append(
                Change(
                    spec.name,
                    "new_version",
                    version,
                    f"kind/params changed (was @{cur['version']})",
                )
            )
        else:
            settings = spec.settings_dict()
            diff = [k for k, v in settings.items() if _stored(cur, k) != v]
            action: Action = "update" if diff else "unchanged"
            changes.append(Change(spec.name, action, version, ", ".join(diff)))
    names = {s.name for s in desired}
    for name, cur in sorted(current.items()):
        if name not in names and not cur["removed"]:
            changes.append(Change(name, "remove", int(cur["version"])))
    return changes


def _stored(row: Mapping[str, Any], key: str) -> Any:
    v = row[key]
    if key == "filter" and isinstance(v, str):
        return json.loads(v)
    if key == "enabled":
        return bool(v)
    return v
