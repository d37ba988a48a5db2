"""What the CLI's commands share: settings and store with CLI errors, one API call, the
--url/--key options of commands that can work through a running server."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from promptblame.display import visible
from promptblame.errors import DataDirLocked, StoreUnavailable
from promptblame.settings import Settings, load_settings

if TYPE_CHECKING:  # the store (pyarrow) loads only in commands that open one
    from promptblame.store import Store


def _settings(**overrides: object) -> Settings:
    try:
        return load_settings(**overrides)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc


def _store(settings: Settings, hint: str = "", *, create: bool = False) -> Store:
    """The configured store. Only the commands that set one up (serve, migrate, keys create,
    demo) pass `create`; the others refuse a data directory without a store, since opening it
    would create an empty one and report a false all-clear from it."""
    from promptblame.store import open_store, store_exists

    if not create and not store_exists(settings):
        raise click.ClickException(
            f"{settings.data_dir} holds no promptblame store. Point PROMPTBLAME_DATA_DIR at the"
            " directory `promptblame serve` uses (after `promptblame demo`: <demo dir>/store),"
            " or create one with `promptblame migrate`."
        )
    try:
        return open_store(settings)
    except DataDirLocked as exc:
        raise click.ClickException(f"{exc}{hint}") from exc
    except StoreUnavailable as exc:
        raise click.ClickException(str(exc)) from exc


_THROUGH_API = "; pass --url and --key (an admin key) to do this through the running server"
Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]
url_option: Decorator = click.option(
    "--url", envvar="PROMPTBLAME_URL", help="A running server, e.g. http://127.0.0.1:8000."
)
key_option: Decorator = click.option(
    "--key", envvar="PROMPTBLAME_API_KEY", help="API key for --url."
)


def _call(url: str, key: str | None, method: str, path: str, **kw: Any) -> Any:
    """One API call for the commands that can work through a running server."""
    import httpx

    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        r = httpx.request(method, url.rstrip("/") + path, headers=headers, timeout=60, **kw)
    except httpx.HTTPError as exc:
        raise click.ClickException(f"cannot reach {url}: {exc}") from exc
    if r.status_code >= 400:
        try:
            detail = r.json().get("detail")
        except ValueError:
            detail = r.text
        if isinstance(detail, list):
            detail = "; ".join(
                f"{'line ' + str(d['line']) + ': ' if d.get('line') else ''}{d['field']}: "
                f"{d['message']}"
                for d in detail
            )
        raise click.ClickException(visible(f"{r.status_code}: {detail}"))
    return r.json()
