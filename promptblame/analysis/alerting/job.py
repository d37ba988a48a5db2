"""The alerting pass: for each incident and each rule it matches, tell the rule's channels.

Per (incident, rule, channel): the opening once; an update when the verdict was revised and the
rule's cooldown has passed since the last message; the resolution once (if the rule wants it).
Only delivered alerts count, so a channel that was down is tried again on the next pass.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from promptblame.analysis.alerting import payloads
from promptblame.analysis.alerting.catalog import current
from promptblame.analysis.alerting.delivery import Delivery, post
from promptblame.analysis.alerting.payloads import Event
from promptblame.analysis.alerting.rules import Channel, Rule
from promptblame.display import visible
from promptblame.releases.incident import release_info, rollback
from promptblame.settings import Settings
from promptblame.store import Store

log = logging.getLogger(__name__)

Poster = Callable[..., Delivery]


@dataclass
class AlertRun:
    sent: int = 0
    failed: int = 0
    errors: int = 0
    """Projects whose pass failed (logged, then raised once all projects had theirs)."""


def run_alerts(
    store: Store,
    settings: Settings,
    *,
    project_id: str | None = None,
    now: datetime | None = None,
    poster: Poster = post,
) -> AlertRun:
    now = now or datetime.now(UTC)
    run = AlertRun()
    for project in [project_id] if project_id else store.projects_with_alert_rules():
        try:
            _alert_project(store, settings, project, now, poster, run)
        except Exception:  # one project's broken config must not silence the others
            run.errors += 1
            log.exception("alerting pass failed for project %s", project)
    if run.errors:  # after every project had its pass: the job run counts as failed
        raise RuntimeError(f"the alerting pass failed for {run.errors} project(s); see the log")
    return run


def _alert_project(
    store: Store,
    settings: Settings,
    project: str,
    now: datetime,
    poster: Poster,
    run: AlertRun,
) -> None:
    config = current(store, project)
    channels = {c.name: c for c in config.channels}
    history = store.alert_history(project)
    oldest = now - timedelta(days=settings.detection_window_days)
    rows = []
    for incident in store.incidents(project, limit=1000):
        if incident["shift_start"] < oldest:
            continue
        for rule in config.rules:
            if not rule.matches(incident):
                continue
            for name in rule.channels:
                h = history.get((incident["incident_id"], rule.name, name))
                event = _event(incident, rule, h, now)
                if event is None:
                    continue
                release = release_info(store, project, incident) if event != "resolved" else None
                rows.append(
                    _deliver(
                        project,
                        incident,
                        rule,
                        channels[name],
                        event,
                        settings,
                        poster,
                        now,
                        release,
                    )
                )
                run.sent += rows[-1]["status"] == "sent"
                run.failed += rows[-1]["status"] == "failed"
    if rows:
        store.insert_rows("alerts", rows)
    _auto_rollback(store, project, config.rules)


def _auto_rollback(store: Store, project: str, rules: list[Rule]) -> None:
    """Rules with `rollback: true`: roll back the open incidents they match (after the
    "opened" alert went out; the rollback resolves the incident, and rules that notify
    resolutions say what moved)."""
    policies = [r for r in rules if r.rollback]
    if not policies:
        return
    for incident in store.incidents(project, status="open", limit=1000):
        rule = next((r for r in policies if r.matches(incident)), None)
        if rule is None:
            continue
        answer = rollback(store, project, incident, key_id=f"policy:{rule.name}")
        if answer["moved"]:
            log.warning("rule %s rolled back: %s", rule.name, visible(answer["message"]))


def _event(
    incident: dict[str, Any], rule: Rule, sent: dict[str, Any] | None, now: datetime
) -> Event | None:
    if incident["status"] == "resolved":
        if rule.notify_resolved and sent and sent["opened"] and not sent["resolved"]:
            return "resolved"
        return None
    if sent is None or not sent["opened"]:
        return "opened" if incident["status"] == "open" else None
    cooled = now - sent["last_sent"] >= timedelta(minutes=rule.cooldown_minutes)
    return "updated" if incident["revision"] > sent["revision"] and cooled else None


def _deliver(
    project: str,
    incident: dict[str, Any],
    rule: Rule,
    channel: Channel,
    event: Event,
    settings: Settings,
    poster: Poster,
    now: datetime,
    release: dict[str, Any] | None,
) -> dict[str, Any]:
    link = f"{settings.public_url.rstrip('/')}/reports/incidents/{incident['incident_id']}"
    build = payloads.slack if channel.kind == "slack" else payloads.webhook
    if event == "resolved" and incident.get("status_note"):
        incident = {**incident, "resolved_reason": incident["status_note"]}
    body = build(incident, event, rule.name, link, release)
    headers = channel.headers if channel.kind == "webhook" else {}
    d = poster(str(channel.url), body, headers=headers)
    if not d.ok:
        # the receiver's words are untrusted: no control characters into the log
        log.warning(
            "alert to %s failed after %d tries: %s", channel.name, d.attempts, visible(d.error)
        )
    return {
        "project_id": project,
        "incident_id": incident["incident_id"],
        "rule": rule.name,
        "channel": channel.name,
        "event": event,
        "revision": incident["revision"],
        "status": "sent" if d.ok else "failed",
        "attempts": d.attempts,
        "error": d.error,
        "text": payloads.headline(incident, event),
        "sent_at": now,
    }
