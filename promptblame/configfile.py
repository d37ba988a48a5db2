"""Config files as code (evaluators.yaml, alerts.yaml): YAML read with the line of every field,
so a problem is reported as `line 12: evaluators.3.params.pattern: <why>`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from promptblame.errors import ConfigInvalid, Problem

Lines = Mapping[tuple[Any, ...], int]

Names = Annotated[list[Annotated[str, Field(min_length=1, max_length=256)]], Field(max_length=100)]


class Scope(BaseModel):
    """Which responses a config item applies to: any of the listed values per field (empty:
    all). A single value may be written without a list."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    app: Names = []
    route: Names = []
    environment: Names = []

    @field_validator("app", "route", "environment", mode="before")
    @classmethod
    def _one_or_many(cls, v: object) -> object:
        return [v] if isinstance(v, str) else v


def read_yaml(path: Path) -> tuple[Any, dict[tuple[Any, ...], int]]:
    """(document, {field path: line}); ConfigInvalid with the line when it is not YAML."""
    text = path.read_text(encoding="utf-8")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        raise ConfigInvalid([Problem("(file)", f"not valid YAML: {exc}", line)]) from None
    lines: dict[tuple[Any, ...], int] = {}
    if node is not None:
        repeated: list[Problem] = []
        _index_lines(node, (), lines, repeated)
        if repeated:  # YAML's loader keeps the last silently: an ambiguous file, refused
            raise ConfigInvalid(repeated)
    return doc, lines


def problem(lines: Lines, loc: tuple[Any, ...], message: str) -> Problem:
    return Problem(".".join(map(str, loc)) or "(file)", message, line_of(lines, loc))


def problems(lines: Lines, base: tuple[Any, ...], exc: ValidationError) -> list[Problem]:
    """pydantic errors of the item at `base`, each with its field path and line."""
    return [problem(lines, base + tuple(e["loc"]), e["msg"]) for e in exc.errors(include_url=False)]


def line_of(lines: Lines, loc: tuple[Any, ...]) -> int | None:
    """The line of the deepest part of `loc` that the file has."""
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None


def _index_lines(
    node: yaml.Node,
    path: tuple[Any, ...],
    out: dict[tuple[Any, ...], int],
    repeated: list[Problem],
) -> None:
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: set[Any] = set()
        for k, v in node.value:
            key = (*path, k.value)
            if k.value in seen:
                where = ".".join(map(str, key))
                repeated.append(
                    Problem(where, "key repeated in one mapping", k.start_mark.line + 1)
                )
            seen.add(k.value)
            _index_lines(v, key, out, repeated)
            out[key] = k.start_mark.line + 1  # the key's line, not its block's
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            _index_lines(v, (*path, i), out, repeated)
