"""Cross-site request forgery protection of the report pages' form posts.

The pages authenticate with a cookie, so another site could make a logged-in browser post a
form to them. Each form carries HMAC(secret, session + purpose) in a hidden input: another site
can neither read it (same-origin policy) nor compute it (no secret). A post whose Origin is
another site is refused before the token is looked at. Requests with an Authorization header
(the API's clients, scripts) are exempt: a browser never adds that header across sites.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from urllib.parse import urlsplit

from starlette.requests import Request

from promptblame.errors import Forbidden
from promptblame.settings import Settings

_PROCESS_KEY = secrets.token_bytes(32)  # when no secret is configured: valid until a restart


def _key(settings: Settings) -> bytes:
    configured = settings.report_form_secret.get_secret_value()
    return configured.encode() if configured else _PROCESS_KEY


def session_of(request: Request, cookie: str) -> str:
    """What a token is bound to: the login cookie, else "local" (no-auth mode)."""
    return request.cookies.get(cookie) or "local"


def token(settings: Settings, session: str, purpose: str) -> str:
    msg = f"{session}\x00{purpose}".encode()
    return hmac.new(_key(settings), msg, hashlib.sha256).hexdigest()


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def check(settings: Settings, request: Request, sent: str, *, cookie: str, purpose: str) -> None:
    """Raise Forbidden unless the post comes from our own page with its token."""
    if request.headers.get("authorization"):
        return
    origin = request.headers.get("origin")
    own = {_origin(settings.public_url), _origin(str(request.base_url))}
    if origin is not None and origin.lower() not in own:
        raise Forbidden(f"form posted from another site ({origin}): refused")
    expected = token(settings, session_of(request, cookie), purpose)
    if not sent or not hmac.compare_digest(sent.encode(), expected.encode()):
        raise Forbidden(
            "the form's security token is missing or out of date: reload the page and try again"
        )
