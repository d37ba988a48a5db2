"""`promptblame prompts ...` (prompts as code, label moves, their history, rollback) and
`promptblame rollouts ...` (guarded rollouts).

Each command works through a running server (--url/--key, what CI and people use while `serve`
holds the data directory) or directly on the embedded store (--project).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import click
from pydantic import ValidationError

from promptblame.api.cli_common import (
    _THROUGH_API,
    _call,
    _settings,
    _store,
    key_option,
    url_option,
)
from promptblame.configfile import problems, read_yaml
from promptblame.display import visible
from promptblame.errors import ConfigInvalid, Conflict, InvalidArgument, NotFound
from promptblame.releases import files, labels

if TYPE_CHECKING:  # the store (pyarrow) loads only in commands that open one
    from promptblame.store import Store


@click.group()
def prompts() -> None:
    """Prompts as code: push a directory of prompt files, move labels, roll back."""


project_option = click.option("--project", help="Project (direct store access).")


def _on_store(project: str | None, work: Any) -> Any:
    """Run `work(store, project)` on the embedded store, domain errors as CLI errors."""
    if not project:
        raise click.UsageError("give --project (or --url and --key)")
    store = _store(_settings(), _THROUGH_API)
    try:
        return work(store, project)
    except (InvalidArgument, Conflict, NotFound) as exc:
        raise click.ClickException(visible(str(exc))) from exc
    finally:
        store.close()


def read_yaml_or_fail(file: Path) -> tuple[Any, dict[tuple[Any, ...], int]]:
    try:
        return read_yaml(file)
    except ConfigInvalid as exc:
        raise click.ClickException(
            f"{file} is not valid:\n" + "\n".join(f"  {p}" for p in exc.problems)
        ) from exc


def _path(prompt_id: str) -> str:
    return f"/v1/prompts/{quote(prompt_id, safe='')}"


@prompts.command("push")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Show what would be registered; change nothing.")
@project_option
@url_option
@key_option
def push(
    directory: Path, dry_run: bool, project: str | None, url: str | None, key: str | None
) -> None:
    """Register every new prompt version in DIRECTORY's *.yaml files and print each new
    version's diff against the one before it. Idempotent: versions already registered with
    the same text are unchanged; a registered version whose text changed is refused."""
    try:
        versions = files.load_dir(directory)
    except ConfigInvalid as exc:
        raise click.ClickException(
            "prompt files are not valid:\n" + "\n".join(f"  {p}" for p in exc.problems)
        ) from exc
    if url:
        results = [_push_through_api(url, key, v, dry_run) for v in versions]
    else:
        results = _on_store(
            project, lambda store, p: [_push_to_store(store, p, v, dry_run) for v in versions]
        )
    conflicts = 0
    for v, (action, detail) in zip(versions, results, strict=True):
        click.echo(visible(f"{action:<10} {v.prompt_id}@{v.version}  ({v.path})"))
        if action == "conflict":
            conflicts += 1
            click.echo(visible(f"           {detail}"))
        elif action in ("new", "would add"):
            click.echo(visible(files.diff(v.previous, v.template, f"{v.prompt_id}@{v.version}")))
    new = sum(a in ("new", "would add") for a, _ in results)
    click.echo(
        f"{new} new version(s) {'would be registered' if dry_run else 'registered'}", err=True
    )
    if conflicts:
        raise click.ClickException(
            f"{conflicts} version(s) were registered with other text: give the edit a new version"
        )


def _push_to_store(
    store: Store, project: str, v: files.PromptVersion, dry: bool
) -> tuple[str, str]:
    existing = store.get_prompt_version(project, v.prompt_id, v.version)
    if existing is not None:
        same = existing["content_hash"] == labels.content_hash(v.template)
        return ("unchanged", "") if same else ("conflict", "registered with other text")
    if dry:
        return "would add", ""
    labels.register(store, project, v.prompt_id, v.version, v.template, author=v.author)
    return "new", ""


def _push_through_api(
    url: str, key: str | None, v: files.PromptVersion, dry: bool
) -> tuple[str, str]:
    listed = _call(url, key, "GET", f"{_path(v.prompt_id)}/versions")["versions"]
    found = next((r for r in listed if r["version"] == v.version), None)
    if found is not None:
        same = found["content_hash"] == labels.content_hash(v.template)
        return ("unchanged", "") if same else ("conflict", "registered with other text")
    if dry:
        return "would add", ""
    path = f"{_path(v.prompt_id)}/versions/{quote(v.version, safe='')}"
    try:
        _call(url, key, "PUT", path, json={"template": v.template, "author": v.author})
    except click.ClickException as exc:
        if exc.message.startswith("409"):  # registered meanwhile, with other text
            return "conflict", exc.message
        raise
    return "new", ""


@prompts.command("label")
@click.argument("prompt_id")
@click.argument("label")
@click.argument("version")
@click.option("--model", default="", help="Only for this model (default: every model).")
@click.option("--expect", "expected", help="Version the label must hold now, else refused.")
@click.option("--force", is_flag=True, help="Past a protected label's gate rule (with --reason).")
@click.option("--reason", default="", help="Why; kept in the label's history.")
@project_option
@url_option
@key_option
def label_cmd(
    prompt_id: str,
    label: str,
    version: str,
    model: str,
    expected: str | None,
    force: bool,
    reason: str,
    project: str | None,
    url: str | None,
    key: str | None,
) -> None:
    """Point LABEL of PROMPT_ID at VERSION (compare-and-set with --expect)."""
    body: dict[str, Any] = {"version": version, "model": model or None, "expected": expected}
    body.update(reason=reason, force=force)
    if url:
        out = _call(
            url, key, "PUT", f"{_path(prompt_id)}/labels/{quote(label, safe='')}", json=body
        )
    else:
        m = labels.Move(
            prompt_id=prompt_id,
            label=label,
            version=version,
            model=model,
            expected=expected,
            reason=reason,
            force=force,
            key_id="cli",
        )
        protected = _settings().protected()
        out = _on_store(project, lambda store, p: labels.move(store, p, m, protected=protected))
    _say_move(out)


def _say_move(out: dict[str, Any]) -> None:
    where = f"{out['label']}{' (' + out['model'] + ')' if out['model'] else ''}"
    if out["moved"]:
        forced = " (forced)" if out["forced"] else ""
        click.echo(visible(f"{where}: {out['from'] or '-'} → {out['to']}{forced}"))
    else:
        click.echo(visible(f"{where}: already {out['to']}; nothing moved"))


@prompts.command("history")
@click.argument("prompt_id")
@click.option("--label", default="", help="Only this label.")
@project_option
@url_option
@key_option
def history(
    prompt_id: str, label: str, project: str | None, url: str | None, key: str | None
) -> None:
    """Every label move of PROMPT_ID: when, by which key, from, to, why."""
    if url:
        names = (
            [label]
            if label
            else sorted(
                {x["label"] for x in _call(url, key, "GET", f"{_path(prompt_id)}/labels")["labels"]}
            )
        )
        rows = [
            m
            for n in names
            for m in _call(url, key, "GET", f"{_path(prompt_id)}/labels/{n}/history")["moves"]
        ]
    else:
        protected = _settings().protected()
        rows = _on_store(
            project,
            lambda store, p: [
                labels.public(r, protected) for r in store.label_history(p, prompt_id, label)
            ],
        )
    if not rows:
        raise click.ClickException(f"prompt {prompt_id!r} has no label moves")
    for m in sorted(rows, key=lambda r: r["at"]):
        where = f"{m['label']}{' (' + m['model'] + ')' if m['model'] else ''}"
        extra = " ".join(
            x
            for x in (
                "forced" if m["forced"] else "",
                f"incident {m['incident_id']}" if m["incident_id"] else "",
                m["reason"],
            )
            if x
        )
        click.echo(
            visible(
                f"{m['at'][:19]}  {where:<20} {m['from'] or '-'} → {m['version']}"
                f"  key {m['key_id'] or '-'}  {extra}".rstrip()
            )
        )


@prompts.command("rollback")
@click.argument("prompt_id")
@click.argument("label")
@click.option("--model", default="", help="The label's pointer for this model.")
@click.option("--reason", default="rollback", show_default=True)
@project_option
@url_option
@key_option
def rollback(
    prompt_id: str,
    label: str,
    model: str,
    reason: str,
    project: str | None,
    url: str | None,
    key: str | None,
) -> None:
    """Move LABEL back to the version it held before its last move."""
    if url:
        moves = _call(url, key, "GET", f"{_path(prompt_id)}/labels/{label}/history")["moves"]
        mine = [m for m in moves if (m["model"] or "") == model]
        if not mine or not mine[-1]["from"]:
            raise click.ClickException(
                f"label {label!r} of {prompt_id!r} has nothing to go back to"
            )
        body = {"version": mine[-1]["from"], "expected": mine[-1]["version"], "reason": reason}
        out = _call(
            url,
            key,
            "PUT",
            f"{_path(prompt_id)}/labels/{label}",
            json={**body, "model": model or None},
        )
    else:

        def work(store: Store, p: str) -> dict[str, Any]:
            now, before = labels.previous_version(store, p, prompt_id, label, model)
            m = labels.Move(
                prompt_id=prompt_id,
                label=label,
                model=model,
                version=before,
                expected=now,
                reason=reason,
                key_id="cli",
            )
            return labels.move(store, p, m, protected=_settings().protected())

        out = _on_store(project, work)
    _say_move(out)


@click.group()
def rollouts() -> None:
    """Guarded rollouts: start one from a file, watch it, pause, resume, abort or promote it."""


@rollouts.command("start")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@project_option
@url_option
@key_option
def rollouts_start(file: Path, project: str | None, url: str | None, key: str | None) -> None:
    """Start the rollout FILE describes (YAML: prompt_id, label, candidate, steps, guardrails,
    ...; the fields of POST /v1/rollouts), or the live experiment (a file with `variants:`
    instead of `candidate:`, the fields of POST /v1/experiments: a fixed split, never
    promoted)."""
    from promptblame.releases.rollouts import ExperimentIn, RolloutIn

    doc, lines = read_yaml_or_fail(file)
    model: type[RolloutIn | ExperimentIn] = (
        ExperimentIn if isinstance(doc, dict) and "variants" in doc else RolloutIn
    )
    try:
        spec = model.model_validate(doc)
    except ValidationError as exc:
        raise click.ClickException(
            f"{file} is not valid:\n" + "\n".join(f"  {p}" for p in problems(lines, (), exc))
        ) from exc
    if url:
        path = "/v1/experiments" if isinstance(spec, ExperimentIn) else "/v1/rollouts"
        out = _call(url, key, "POST", path, json=spec.model_dump())
    else:
        from promptblame.releases.rollouts import public as rollout_public
        from promptblame.releases.rollouts import start as start_rollout

        protected = _settings().protected()
        out = _on_store(
            project,
            lambda store, p: rollout_public(
                store, p, start_rollout(store, p, spec, key_id="cli", protected=protected)
            ),
        )
    _say_rollout(out)


@rollouts.command("list")
@project_option
@url_option
@key_option
def rollouts_list(project: str | None, url: str | None, key: str | None) -> None:
    """Every rollout, newest first: id, state, step, label, incumbent → candidate."""
    if url:
        rows = _call(url, key, "GET", "/v1/rollouts")["rollouts"]
    else:
        from promptblame.releases.rollouts import public as rollout_public

        rows = _on_store(
            project,
            lambda store, p: [rollout_public(store, p, s) for s in store.rollout_states(p)],
        )
    for r in rows:
        _say_rollout(r)


@rollouts.command("show")
@click.argument("rollout_id")
@project_option
@url_option
@key_option
def rollouts_show(rollout_id: str, project: str | None, url: str | None, key: str | None) -> None:
    """One rollout with its guardrails' current estimates and the decision log, as JSON."""
    if url:
        out = _call(url, key, "GET", f"/v1/rollouts/{quote(rollout_id, safe='')}")
    else:
        from promptblame.releases.rollouts import get as get_rollout
        from promptblame.releases.rollouts import public as rollout_public

        out = _on_store(
            project,
            lambda store, p: rollout_public(store, p, get_rollout(store, p, rollout_id), live=True),
        )
    click.echo(json.dumps(out, indent=2, default=str))


def _rollout_action(action: str) -> click.Command:
    @click.argument("rollout_id")
    @click.option("--note", default="", help="Why; kept in the decision log.")
    @project_option
    @url_option
    @key_option
    def command(
        rollout_id: str, note: str, project: str | None, url: str | None, key: str | None
    ) -> None:
        if url:
            path = f"/v1/rollouts/{quote(rollout_id, safe='')}/{action}"
            out = _call(url, key, "POST", path, json={"note": note})
        else:
            from promptblame.releases.rollouts import act
            from promptblame.releases.rollouts import public as rollout_public

            out = _on_store(
                project,
                lambda store, p: rollout_public(
                    store, p, act(store, p, rollout_id, action, key_id="cli", note=note)
                ),
            )
        _say_rollout(out)

    command.__doc__ = {
        "pause": "Keep the current split, stop advancing.",
        "resume": "Let a paused rollout advance again.",
        "abort": "End it: the incumbent takes all traffic again.",
        "promote": "End it now: the label moves to the candidate.",
    }[action]
    return rollouts.command(action)(command)


for _action in ("pause", "resume", "abort", "promote"):
    _rollout_action(_action)


def _say_rollout(r: dict[str, Any]) -> None:
    if r.get("kind") == "experiment":
        split = ", ".join(f"{v} {w:g} %" for v, w in r["split"].items())
        what = f"experiment  {r['prompt_id']} {r['label']}: {split}"
    else:
        what = (
            f"{r['percent']:g} %  {r['prompt_id']} {r['label']}:"
            f" {r['incumbent']} → {r['candidate']}"
        )
    click.echo(visible(f"{r['rollout_id']}  {r['state']:<11} {what}  {r['reason']}"))
