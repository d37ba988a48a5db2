"""`promptblame review`: annotation queues and trust rules as config (review.yaml)."""

from __future__ import annotations

from pathlib import Path

import click

from promptblame.api.cli_common import key_option, url_option


@click.group()
def review() -> None:
    """Human review as config: apply a review.yaml (queues, trust rules)."""


@review.command("apply")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--project", help="Project to apply to (direct store access).")
@click.option("--dry-run", is_flag=True, help="Show the changes; change nothing.")
@url_option
@key_option
def review_apply(
    file: Path, project: str | None, dry_run: bool, url: str | None, key: str | None
) -> None:
    """Validate FILE, then make the project's queues and trust rules equal to it and fill the
    queues. Queues missing from the file are removed (their labels and scores stay). Through a
    running server with --url/--key (an admin key), else directly on the store (--project)."""
    from promptblame.api.cli import _apply_config, _report_changes
    from promptblame.review.config import load_yaml
    from promptblame.review.queues import apply

    changes = _apply_config(
        file,
        load_yaml,
        lambda cfg: cfg.model_dump(mode="json"),
        "/v1/queues",
        lambda store, project, cfg, dry: apply(store, project, cfg, dry_run=dry),
        project=project,
        dry_run=dry_run,
        url=url,
        key=key,
    )
    _report_changes(changes, lambda c: f"{c['action']:<12} {c['section']} {c['name']}", dry_run)
