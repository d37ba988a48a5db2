"""Small builders shared by tests (no fakes of our own code here)."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta
from typing import Any

BASE_TS = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def event(i: int, **over: Any) -> dict[str, Any]:
    e: dict[str, Any] = {
        "event_id": f"evt-{i}",
        "ts": (BASE_TS + timedelta(seconds=i)).isoformat(),
        "app": "support-bot",
        "route": "refunds" if i % 2 else "billing",
        "environment": "prod",
        "prompt_id": "answer",
        "prompt_version": "v1",
        "model": "gpt-4o",
        "model_version": "2024-08-06",
        "provider": "openai",
        "input": f"question {i}",
        "output": f"answer {i} <script>alert(1)</script>",
        "latency_ms": 100.0 + i,
        "input_tokens": 10,
        "output_tokens": 20,
        "cost_usd": 0.001,
        "tags": {"tier": "free"},
    }
    e.update(over)
    return e


def body(key: str, items: list[Any], *, compress: bool = False) -> bytes:
    raw = json.dumps({key: items}).encode()
    return gzip.compress(raw) if compress else raw


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
