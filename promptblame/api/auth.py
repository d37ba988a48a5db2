"""API keys: `pb_<key id>_<secret>`, stored as SHA-256 of the secret, scoped to one project.

Keys are 256-bit random, so a plain SHA-256 is enough (no password stretching needed); lookup is
by key id, comparison in constant time. Checked keys are cached briefly so ingest does not pay a
query per request; revocation takes effect within `key_cache_seconds`. A valid key then takes a
token from its rate-limit bucket (`ratelimit.TokenBuckets`): over the rate, 429 + Retry-After.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from fastapi.openapi.models import HTTPBearer as HTTPBearerModel
from fastapi.security.base import SecurityBase
from starlette.requests import HTTPConnection

from promptblame.api.ratelimit import TokenBuckets
from promptblame.api.scopes import SCOPES
from promptblame.errors import Forbidden, Unauthorized
from promptblame.refresh_ahead import RefreshAhead
from promptblame.store import ApiKeyRecord, Store

_PREFIX = "pb_"


@dataclass(frozen=True)
class Principal:
    project_id: str
    scopes: frozenset[str]
    key_id: str

    def require(self, scope: str) -> None:
        if scope not in self.scopes:
            raise Forbidden(f"this API key lacks the {scope!r} scope")


def _sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_key(project_id: str, scopes: list[str], name: str = "") -> tuple[str, ApiKeyRecord]:
    """A fresh key: the plaintext (shown once) and the record to store."""
    bad = sorted(set(scopes) - set(SCOPES))
    if bad or not scopes:
        raise ValueError(f"scopes must be some of {', '.join(SCOPES)}; got {scopes}")
    if not project_id or len(project_id) > 128:
        raise ValueError("project must be 1-128 characters")
    key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    record = ApiKeyRecord(
        key_id=key_id,
        project_id=project_id,
        secret_sha256=_sha256(secret),
        scopes=tuple(sorted(set(scopes))),
        name=name,
        created_at=datetime.now(UTC),
    )
    return f"{_PREFIX}{key_id}_{secret}", record


class BearerKey(SecurityBase):
    """`Authorization: Bearer pb_...` as an OpenAPI security scheme. Hands the raw header to
    KeyChecker, which says what is wrong with it (FastAPI's own HTTPBearer would not)."""

    def __init__(self) -> None:
        self.model = HTTPBearerModel(
            bearerFormat="pb_<key id>_<secret>",
            description="An API key from `promptblame keys create`; its project and scopes"
            " decide what the request may see and do.",
        )
        self.scheme_name = "ApiKey"
        self.auto_error = False

    async def __call__(self, request: HTTPConnection) -> str | None:
        return request.headers.get("authorization")


bearer_key = BearerKey()


class KeyChecker:
    def __init__(
        self, store: Store, *, cache_seconds: float, limiter: TokenBuckets | None = None
    ) -> None:
        # unknown ids are cached too (bounded): a flood of made-up keys costs one read each
        self._records = RefreshAhead(cache_seconds, store.get_api_key)
        self._limiter = limiter

    def check(self, authorization: str | None, *, block: bool = True) -> Principal:
        """The key's principal; with block=False raises Miss rather than read the store."""
        if not authorization:
            raise Unauthorized("missing Authorization: Bearer <api key>")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.startswith(_PREFIX):
            raise Unauthorized("Authorization must be 'Bearer pb_...'")
        key_id, sep, secret = token[len(_PREFIX) :].strip().partition("_")
        record = self._records.get(key_id, block=block) if sep else None
        if (
            record is None
            or record.revoked
            or not hmac.compare_digest(record.secret_sha256, _sha256(secret))
        ):
            raise Unauthorized("unknown or revoked API key")
        if self._limiter is not None:
            self._limiter.check(record.key_id)
        return Principal(record.project_id, frozenset(record.scopes), record.key_id)
