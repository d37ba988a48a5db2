"""What an alert says: a generic JSON document, and a Slack incoming-webhook message whose first
line names the culprit (or says why there is none).

Version names, apps and routes are caller-chosen text. The webhook document carries them exactly
(JSON escapes them); its `text` line and the Slack message are for people, so control characters
and bidi overrides there are shown as symbols (`display.visible`), and in Slack `&`, `<` and `>`
are escaped so no text becomes a mention (`<!channel>`) or a disguised link (`<url|label>`).
"""

from __future__ import annotations

import json
from typing import Any, Literal

from promptblame.display import visible

Event = Literal["opened", "updated", "resolved"]


def headline(incident: dict[str, Any], event: Event) -> str:
    """One line, culprit first: what on-call reads on a lock screen."""
    where = f"{incident['app']}/{incident['route'] or '*'}"
    metric = incident["metric"]
    move = "regressed" if incident["direction"] == "regression" else "improved"
    if event == "resolved":
        return f"Resolved: {metric} on {where} ({incident.get('resolved_reason') or 'resolved'})"
    prefix = "Updated: " if event == "updated" else ""
    if str(incident.get("incident_id", "")).startswith("rollout-"):  # what was rolled back, why
        return f"{prefix}{incident['summary']}"
    if incident["verdict"] == "culprit":
        return (
            f"{prefix}{incident['culprit']} {move} {metric} on {where}"
            f" by {incident['effect']:+.3g} (p={incident['p_value']:.2g})"
        )
    if incident["verdict"] == "confounded":
        return f"{prefix}{metric} {move} on {where}; cannot separate: {incident['culprit']}"
    if incident["verdict"] == "insufficient_evidence" and _no_shift(incident):
        who = incident["culprit"] or "a version"
        return (
            f"{prefix}{who} not verified on {metric} on {where}: too little traffic to tell"
            f" whether it changed it{_sides(incident)}; no shift detected"
        )
    if incident["verdict"] == "insufficient_evidence":
        who = incident["culprit"] or "a version that arrived then"
        return (
            f"{prefix}{metric} {move} on {where}; not enough evidence, not excluded: {who}"
            f"{_sides(incident)}"
        )
    return f"{prefix}{metric} {move} on {where}; no version caused it ({incident['summary']})"


def _evidence(incident: dict[str, Any]) -> dict[str, Any]:
    try:
        evidence = json.loads(incident.get("evidence") or "{}")
    except ValueError:
        return {}
    return evidence if isinstance(evidence, dict) else {}


def _no_shift(incident: dict[str, Any]) -> bool:
    """An arrival tested where the detector found no shift (reason `arrival_underpowered`)."""
    return _evidence(incident).get("reason") == "arrival_underpowered"


def _sides(incident: dict[str, Any]) -> str:
    """' (n new vs n old responses; about n a side would decide it)' of the version not
    excluded, '' when the evidence does not say."""
    for c in _evidence(incident).get("candidates") or []:
        if isinstance(c, dict) and c.get("status") == "not_excluded" and c.get("n_needed"):
            return (
                f" ({c.get('n_new', 0):,} new vs {c.get('n_old', 0):,} old responses;"
                f" about {c['n_needed']:,} a side would decide it)"
            )
    return ""


def release_line(release: dict[str, Any] | None) -> str:
    """Which labels serve the culprit now and how to roll back ('' when no label serves it)."""
    if not release or not release["serving_labels"]:
        return ""
    serving = ", ".join(
        f"{s['label']}{' (' + s['model'] + ')' if s['model'] else ''}"
        for s in release["serving_labels"]
    )
    if release["rollback_possible"]:
        how = f"roll back to {release['rollback_to']}: {release['how']}"
    else:
        how = f"no rollback: {release['why_not']}"
    return f"Served now by label {serving}; {how}"


def webhook(
    incident: dict[str, Any],
    event: Event,
    rule: str,
    link: str,
    release: dict[str, Any] | None = None,
) -> dict[str, Any]:
    keys = [
        "incident_id",
        "app",
        "route",
        "environment",
        "metric",
        "source",
        "direction",
        "verdict",
        "culprit",
        "summary",
        "effect",
        "p_value",
        "shift_start",
        "status",
        "revision",
    ]
    return {
        "event": event,
        "rule": rule,
        "text": visible(headline(incident, event)),
        "incident": {k: _plain(incident.get(k)) for k in keys},
        "evidence": incident.get("evidence", {}),
        "release": release,
        "link": link,
    }


def slack(
    incident: dict[str, Any],
    event: Event,
    rule: str,
    link: str,
    release: dict[str, Any] | None = None,
) -> dict[str, Any]:
    text = _escape(headline(incident, event))
    detail = _escape(str(incident.get("summary", "")))
    if event != "resolved" and release_line(release):
        detail += "\n" + _escape(release_line(release))
    return {
        "text": text,  # the notification line
        "unfurl_links": False,  # Slack must not fetch URLs that sit in version names
        "unfurl_media": False,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*{text}*"}},
            {"type": "section", "text": {"type": "mrkdwn", "text": detail}},
            {
                "type": "context",
                "elements": [
                    {"type": "mrkdwn", "text": f"rule {_escape(rule)} · <{link}|incident report>"}
                ],
            },
        ],
    }


def _escape(text: str) -> str:
    """Slack mrkdwn control characters (version labels are user data), and what would act on the
    reader's display."""
    return visible(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _plain(v: Any) -> Any:
    return v.isoformat() if hasattr(v, "isoformat") else v
