"""Prompts as code: a directory of YAML files in the app's repository, one file per prompt with
its versions in order, reviewed in pull requests like any code:

    # prompts/answer.yaml
    prompt: answer
    versions:
      - version: v3
        author: ana
        template: |
          Answer the customer's question. Always quote the exact policy section.
      - version: v4
        template: |
          Answer the customer's question. Keep answers short.

A new version is a new item (old items stay as they were, so the pull request shows what was
added and `prompts push` prints the diff against the version before it). Versions are registered
idempotently by content hash: pushing the same files twice registers nothing new, and a version
whose text was edited after it was registered is refused (make a new version instead).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from promptblame.configfile import problem, problems, read_yaml
from promptblame.errors import ConfigInvalid, Problem

Name = Annotated[str, Field(min_length=1, max_length=256)]


class VersionSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    version: Name
    template: Annotated[str, Field(min_length=1, max_length=1_000_000)]
    author: Annotated[str, Field(max_length=256)] = ""


class PromptFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    prompt: Name
    versions: Annotated[list[VersionSpec], Field(min_length=1, max_length=10_000)]


@dataclass(frozen=True)
class PromptVersion:
    prompt_id: str
    version: str
    template: str
    author: str
    path: Path
    previous: str | None  # the template of the version before it in the file


def load_dir(root: Path) -> list[PromptVersion]:
    """Every version of every prompt file under `root` (*.yaml, *.yml), in file order;
    ConfigInvalid lists each problem as `file:line: field: why`."""
    files = sorted(p for p in root.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())
    if not files:
        raise ConfigInvalid([Problem(str(root), "no prompt files (*.yaml) in this directory")])
    out: list[PromptVersion] = []
    found: list[Problem] = []
    owner: dict[str, Path] = {}
    for path in files:
        try:
            spec = _load(path)
        except ConfigInvalid as exc:
            found += [  # as compilers do: file:line: field: why
                Problem(f"{path}{':' + str(p.line) if p.line else ''}: {p.field}", p.message)
                for p in exc.problems
            ]
            continue
        if spec.prompt in owner:
            found.append(
                Problem(f"{path}: prompt", f"{spec.prompt!r} is also in {owner[spec.prompt]}")
            )
            continue
        owner[spec.prompt] = path
        previous = None
        for v in spec.versions:
            out.append(PromptVersion(spec.prompt, v.version, v.template, v.author, path, previous))
            previous = v.template
    if found:
        raise ConfigInvalid(found)
    return out


def _load(path: Path) -> PromptFile:
    doc, lines = read_yaml(path)
    try:
        spec = PromptFile.model_validate(doc)
    except ValidationError as exc:
        raise ConfigInvalid(problems(lines, (), exc)) from None
    seen: set[str] = set()
    for i, v in enumerate(spec.versions):
        if v.version in seen:
            loc = ("versions", i, "version")
            raise ConfigInvalid([problem(lines, loc, f"{v.version!r} is listed twice")])
        seen.add(v.version)
    return spec


def diff(old: str | None, new: str, title: str) -> str:
    """A unified diff of two templates (the whole text when there is nothing before)."""
    lines = difflib.unified_diff(
        (old or "").splitlines(keepends=True),
        new.splitlines(keepends=True),
        fromfile=f"{title} (before)" if old is not None else "/dev/null",
        tofile=title,
    )
    return "".join(lines)
