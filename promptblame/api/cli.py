"""The `promptblame` command: serve, worker, keys, migrate."""

from __future__ import annotations

import logging
from dataclasses import replace

import click

from promptblame.api.auth import SCOPES, new_key
from promptblame.errors import DataDirLocked, StoreUnavailable
from promptblame.settings import Settings, load_settings
from promptblame.store import Store, open_store


def _settings(**overrides: object) -> Settings:
    try:
        return load_settings(**overrides)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc


def _store(settings: Settings) -> Store:
    try:
        return open_store(settings)
    except (DataDirLocked, StoreUnavailable) as exc:
        raise click.ClickException(str(exc)) from exc


@click.group()
def main() -> None:
    """promptblame: which prompt or model version moved LLM answer quality."""
    logging.basicConfig(
        level=_settings().log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@main.command()
@click.option("--host", help="Bind address (default PROMPTBLAME_HOST, 127.0.0.1).")
@click.option("--port", type=int, help="Port (default PROMPTBLAME_PORT, 8000).")
def serve(host: str | None, port: int | None) -> None:
    """Run the HTTP API (ingest, reads) on the configured store."""
    import uvicorn

    from promptblame.api.app import create_app

    overrides = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    settings = _settings(**overrides)
    store = _store(settings)
    try:
        app = create_app(settings, store)
        uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        store.close()


@main.command()
def worker() -> None:
    """Run the scheduled jobs against a ClickHouse server (embedded: `serve` runs them)."""
    from apscheduler.schedulers.blocking import BlockingScheduler

    from promptblame.analysis.jobs import add_jobs

    settings = _settings()
    if not settings.clickhouse_url:
        raise click.ClickException(
            "the worker runs against a ClickHouse server (set PROMPTBLAME_CLICKHOUSE_URL);"
            " with the embedded store, `promptblame serve` runs the jobs itself"
        )
    store = _store(settings)
    scheduler = BlockingScheduler(timezone="UTC")
    add_jobs(scheduler, store, settings)
    click.echo(f"worker on the {store.kind} store; {len(scheduler.get_jobs())} jobs scheduled")
    try:
        scheduler.start()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        store.close()


@main.command()
def migrate() -> None:
    """Apply pending schema migrations (serve and worker also do this at start-up)."""
    store = _store(_settings())
    try:
        click.echo(f"schema at version {max(store.applied_migrations(), default=0)}")
    finally:
        store.close()


@main.group()
def keys() -> None:
    """Create, list and revoke API keys."""


@keys.command("create")
@click.option("--project", required=True, help="Project the key is scoped to.")
@click.option("--scopes", default="ingest,read", show_default=True, help=f"Comma list of {SCOPES}.")
@click.option("--name", default="", help="A label to recognise the key by.")
def keys_create(project: str, scopes: str, name: str) -> None:
    """Print a new key once; only its hash is stored."""
    try:
        plaintext, record = new_key(project, [s.strip() for s in scopes.split(",")], name)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    store = _store(_settings())
    try:
        store.put_api_key(record)
    finally:
        store.close()
    click.echo(plaintext)
    click.echo(
        f"key {record.key_id} for project {project!r}, scopes {','.join(record.scopes)}"
        " (shown once; store it now)",
        err=True,
    )


@keys.command("list")
@click.option("--project", default="", help="Only this project's keys.")
def keys_list(project: str) -> None:
    """List keys (id, project, scopes, state, name, created); never the secret."""
    store = _store(_settings())
    try:
        for k in store.list_api_keys(project or None):
            state = "revoked" if k.revoked else "active"
            click.echo(
                f"{k.key_id}\t{k.project_id}\t{','.join(k.scopes)}\t{state}\t{k.name}"
                f"\t{k.created_at:%Y-%m-%d %H:%M}"
            )
    finally:
        store.close()


@keys.command("revoke")
@click.argument("key_id")
def keys_revoke(key_id: str) -> None:
    """Revoke a key by its id (the part after `pb_`); servers stop accepting it within
    PROMPTBLAME_KEY_CACHE_SECONDS."""
    store = _store(_settings())
    try:
        record = store.get_api_key(key_id)
        if record is None:
            raise click.ClickException(f"no key {key_id!r}")
        store.put_api_key(replace(record, revoked=True))
        click.echo(f"revoked {key_id}")
    finally:
        store.close()


if __name__ == "__main__":
    main()
