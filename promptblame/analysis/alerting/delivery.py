"""Send one alert: POST JSON, retrying connection errors, timeouts, 429 and 5xx with exponential
backoff and jitter (honouring Retry-After, capped)."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any

import httpx

_RETRYABLE = {408, 425, 429, 500, 502, 503, 504}


@dataclass(frozen=True)
class Delivery:
    ok: bool
    attempts: int
    error: str = ""


def post(
    url: str,
    payload: dict[str, Any],
    *,
    headers: dict[str, str] | None = None,
    retries: int = 3,
    backoff: float = 1.0,
    max_wait: float = 30.0,
    timeout: float = 10.0,
) -> Delivery:
    error = ""
    for attempt in range(1, retries + 2):
        wait = 0.0
        try:
            r = httpx.post(url, json=payload, headers=headers or {}, timeout=timeout)
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        else:
            if r.status_code < 300:
                return Delivery(True, attempt)
            error = f"HTTP {r.status_code}: {r.text[:200]}"
            if r.status_code not in _RETRYABLE:
                return Delivery(False, attempt, error)
            after = r.headers.get("retry-after", "")
            wait = float(after) if after.replace(".", "", 1).isdigit() else 0.0
        if attempt <= retries:
            time.sleep(
                min(max_wait, max(wait, backoff * 2 ** (attempt - 1) * (0.5 + random.random())))
            )
    return Delivery(False, retries + 1, error)
