"""The scopes an API key can hold (a module of its own so the CLI can name them without
importing the web stack)."""

from __future__ import annotations

SCOPES = ("ingest", "read", "admin", "review")  # admin: change config (evaluators, alert rules)
# review: label responses in annotation queues (admin may too); a read key may not
