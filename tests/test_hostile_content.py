"""Hostile content (tests/hostile.py) in every text field: the store and the API hand it back byte
for byte, and every report page, exported file, alert payload and CLI line shows it as inert
text — no markup, no script, nothing loaded, no terminal control sequence, no bidi reordering.

One project is seeded with the corpus in a data directory of its own (module fixture), served by
an in-process app; a copy of the directory serves the CLI subprocesses.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from markupsafe import escape

from promptblame.analysis.alerting import payloads as alert_payloads
from promptblame.analysis.service import CompareSpec, ExperimentSpec
from promptblame.api.app import create_app
from promptblame.api.auth import new_key
from promptblame.display import visible
from promptblame.reports import charts
from promptblame.reports.data import (
    comparison_view,
    experiment_view,
    incident_view,
    overview_view,
)
from promptblame.reports.render import (
    render_comparison,
    render_experiment,
    render_incident,
    render_login,
    render_overview,
)
from promptblame.settings import Settings
from promptblame.store import ResponseFilter, Store, open_store
from tests.helpers import auth
from tests.hostile import (
    ARMS,
    BIDI,
    CONTROL,
    SLOTS_A,
    SLOTS_B,
    Payload,
    Seeded,
    by_name,
    check_html,
    corpus,
    experiment_name,
    ident,
    seed,
    shown,
)
from tests.server_process import CLI, env_for
from tests.test_incidents import NOW, SWITCH

PAYLOADS = corpus()
P = by_name(PAYLOADS)
PROJECT = "evil"
# Identifier fields of a response event (at most 256 characters; app, model and event_id
# must not be empty).
ID_FIELDS = (
    *("event_id", "app", "model", "route", "environment", "prompt_id", "prompt_version"),
    *("model_version", "provider", "experiment", "variant", "case_id", "trace_id", "span_id"),
    *("user_id", "session_id", "error_type"),
)
TEXT_FIELDS = ("input", "output", "expected_output")
FILTERS = (
    *("app", "route", "environment", "prompt_id", "prompt_version", "model", "model_version"),
    *("provider", "experiment", "variant"),
)


@dataclass
class Site:
    seeded: Seeded
    data: Path
    cli_data: Path
    sent: list[tuple[str, dict[str, Any]]]
    hook_url: str
    store: Store
    client: TestClient
    key: str  # read key of PROJECT
    admin: str  # ingest+read+admin key of the round-trip project "rt"


class _Hook(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("hostile")
    hooks = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)  # for the CLI's `detect`, if it sends
    threading.Thread(target=hooks.serve_forever, daemon=True).start()
    hook_url = f"http://127.0.0.1:{hooks.server_address[1]}/hook"
    sent: list[tuple[str, dict[str, Any]]] = []
    settings = Settings(data_dir=root / "data")
    store = open_store(settings)
    try:
        seeded = seed(store, PROJECT, PAYLOADS, hook_url, sent)
        # Keys whose project and name are hostile, for `keys list`.
        for p in (P["ansi-clear"], P["rtl-override"], P["ansi-title"]):
            store.put_api_key(new_key(ident(p)[:128], ["read"], name=p.text)[1])
    finally:
        store.close()
    shutil.copytree(root / "data", root / "cli", symlinks=True)  # chDB links are relative
    store = open_store(settings)
    key, record = new_key(PROJECT, ["read"])
    store.put_api_key(record)
    admin, record = new_key("rt", ["ingest", "read", "admin"])
    store.put_api_key(record)
    try:
        with TestClient(create_app(settings, store)) as client:
            yield Site(
                seeded, root / "data", root / "cli", sent, hook_url, store, client, key, admin
            )
    finally:
        store.close()
        hooks.shutdown()
        hooks.server_close()


# -- the display rule ------------------------------------------------------------------------


def test_control_characters_and_bidi_overrides_are_shown_as_symbols():
    assert visible("\x1b[2Jok") == "␛[2Jok"
    assert visible("a\x00b\x07\x08\x7f") == "a␀b␇␈␡"
    assert visible("all good\rFAILED") == "all good␍FAILED"
    assert visible("v2\u202e1v\u2066x") == "v2[U+202E]1v[U+2066]x"
    assert visible("\x9b2J") == "[U+009B]2J"
    plain = "tab\tnew\nline\r\nzalgo Z\u0335 𝕳 😈 \u200b"
    assert visible(plain) is plain  # text without them is not even copied
    for p in PAYLOADS:
        out = visible(p.text)
        assert not CONTROL.search(out.replace("\r\n", "\n")) and not BIDI.search(out), p.name


# -- the store and the API keep every byte ---------------------------------------------------


def response_event(n: int, p: Payload) -> dict[str, Any]:
    short = ident(p)
    e: dict[str, Any] = {f: short for f in ID_FIELDS}
    e.update(
        event_id=ident(p, f"#{n}"),
        ts=f"2026-11-20T00:{n // 60:02d}:{n % 60:02d}Z",
        **{f: p.text for f in TEXT_FIELDS},
        tags={short: p.text[:4096], "k": short},
    )
    return e


def test_every_payload_round_trips_byte_for_byte_through_ingest_reads_and_filters(site):
    c, h = site.client, auth(site.admin)
    events = [response_event(n, p) for n, p in enumerate(PAYLOADS)]
    r = c.post("/v1/responses", content=json.dumps({"responses": events}), headers=h)
    assert r.status_code == 200, r.text[:500]
    for n, (e, p) in enumerate(zip(events, PAYLOADS, strict=True)):
        short = ident(p)
        # Each payload as a filter value: a literal, never SQL (every filter for the payloads
        # that parameter escaping could trip on, one for the rest: a request each).
        every = p.kind == "sql" or CONTROL.search(p.text)
        for f in FILTERS if every else (FILTERS[n % len(FILTERS)],):
            got = c.get("/v1/responses", params={f: short, "limit": 1000}, headers=h)
            assert got.status_code == 200, (p.name, f)
            rows = got.json()["responses"]
            assert [x["event_id"] for x in rows] == [e["event_id"]], (p.name, f)
        (row,) = rows
        for k, v in e.items():
            assert row[k] == v, (p.name, k)
    # Aggregates group by the payloads as they are.
    versions = c.get("/v1/versions", headers=h).json()["versions"]
    assert sorted(v["prompt_version"] for v in versions) == sorted(ident(p) for p in PAYLOADS)
    assert site.store.count("responses", "rt") == len(PAYLOADS)  # DROP TABLE did nothing

    # Scores: the comment is free text (names and sources are restricted: 422, field named).
    scores = [
        {"event_id": e["event_id"], "name": "ok", "value": 1, "comment": p.text[:10_000]}
        for e, p in zip(events, PAYLOADS, strict=True)
    ]
    assert c.post("/v1/scores", json={"scores": scores}, headers=h).status_code == 200
    stored = site.store._rows(  # no read endpoint for raw scores
        "SELECT event_id, comment FROM scores FINAL WHERE project_id = {p:String}", p="rt"
    )
    assert {r["event_id"]: r["comment"] for r in stored} == {
        s["event_id"]: s["comment"] for s in scores
    }
    bad = c.post(
        "/v1/scores",
        json={"scores": [{"event_id": "x", "name": P["sql-or"].text, "value": 1}]},
        headers=h,
    )
    assert bad.status_code == 422 and bad.json()["rejected"][0]["errors"][0]["field"] == "name"


def test_prompt_templates_authors_labels_and_ids_round_trip(site):
    c, h = site.client, auth(site.admin)
    registered = 0
    for p in PAYLOADS:
        short = ident(p)
        url = f"/v1/prompts/{quote(short, safe='')}/versions/{quote(short, safe='')}"
        body = {"template": p.text, "author": short, "labels": [short]}
        r = c.put(url, json=body, headers=h)
        assert r.status_code == 201, (p.name, r.text[:300])
        registered += 1
        listed = c.get(f"/v1/prompts/{quote(short, safe='')}/versions", headers=h).json()
        (v,) = listed["versions"]
        assert listed["prompt_id"] == short and v["version"] == short, p.name
        assert (v["template"], v["author"], v["labels"]) == (p.text, short, [short]), p.name
    assert registered == len(PAYLOADS)


def test_evaluator_and_alert_config_keep_hostile_text_and_refuse_hostile_names(site):
    c, h = site.client, auth(site.admin)
    texts = [ident(p) for p in PAYLOADS]
    doc = {
        "evaluators": [
            {
                "name": "hostile",
                "kind": "contains",
                "params": {"values": texts},
                "filter": {"app": texts},
                "description": P["script"].text,
            }
        ]
    }
    assert c.put("/v1/evaluators", json=doc, headers=h).status_code == 200
    (ev,) = c.get("/v1/evaluators", headers=h).json()["evaluators"]
    assert ev["params"]["values"] == texts and ev["filter"]["app"] == texts
    assert ev["description"] == P["script"].text
    rules = {
        "channels": [{"name": "hook", "kind": "webhook", "url": site.hook_url}],
        "rules": [
            {"name": "r", "metric": ident(P["sql-drop"])[:128], "filter": {"app": texts}}
            | {"channels": ["hook"]}
        ],
    }
    assert c.put("/v1/alert-rules", json=rules, headers=h).status_code == 200
    (rule,) = c.get("/v1/alert-rules", headers=h).json()["rules"]
    assert rule["metric"] == ident(P["sql-drop"])[:128] and rule["filter"]["app"] == texts
    for p in PAYLOADS:  # names are identifiers: refused with the field named, not echoed
        named = {"evaluators": [{**doc["evaluators"][0], "name": p.text}]}
        r = c.put("/v1/evaluators", json=named, headers=h)
        assert r.status_code == 422 and r.json()["detail"][0]["field"].endswith("name")
        assert p.text not in r.text
        bad_url = {**rules, "channels": [{"name": "hook", "kind": "webhook", "url": p.text}]}
        assert c.put("/v1/alert-rules", json=bad_url, headers=h).status_code == 422


def test_an_incident_note_round_trips_and_is_shown_inertly(site):
    admin_key, record = new_key(PROJECT, ["read", "admin"])
    site.store.put_api_key(record)
    iid = site.seeded.clones["attr-breakout-single"]
    note = P["svg-text-breakout"].text + P["ansi-hyperlink"].text + P["rtl-override"].text
    r = site.client.post(f"/v1/incidents/{iid}/ack", json={"note": note}, headers=auth(admin_key))
    assert r.status_code == 200
    got = site.client.get(f"/v1/incidents/{iid}", headers=auth(site.key)).json()
    assert got["status_note"] == note and got["status"] == "acknowledged"
    page = report(site, f"/reports/incidents/{iid}")
    assert shown(note) in page.text and "Note: " in page.text


# -- report pages ----------------------------------------------------------------------------


def report(site: Site, path: str, **params: Any) -> Any:
    r = site.client.get(path, params=params, headers=auth(site.key))
    assert r.status_code == 200, (path, r.text[:300])
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    page = check_html(r.text)
    assert page.problems == [], (path, page.problems[:5])
    return page


def missing(page_text: str, payloads: list[Payload], *, clip: int | None = None) -> list[str]:
    return [p.name for p in payloads if shown(p.text[:clip] if clip else p.text) not in page_text]


def test_the_detected_incidents_show_their_hostile_names_and_samples_as_text(site):
    s = site.seeded
    for iid, slots in ((s.prompt_culprit, SLOTS_A), (s.model_culprit, SLOTS_B)):
        page = report(site, f"/reports/incidents/{iid}")
        names = [P[n] for n in slots.values()]
        assert missing(page.text, names) == [], iid
        assert page.tags.get("svg") == 1  # the chart, its labels hostile too
    # The prompt incident's diff holds every payload (the templates list them one per line).
    page = report(site, f"/reports/incidents/{s.prompt_culprit}")
    # (str.splitlines: U+2028, U+2029 and NEL end a line too)
    lines = [
        Payload(p.name, p.kind, part)
        for p in PAYLOADS
        for part in p.text.replace("\n", " ").replace("\r", " ").splitlines()
    ]
    assert missing(page.text, lines) == []
    assert "49" not in page.text.split("{{7*7}}")[0][-20:]  # the template text is not evaluated


def test_payloads_are_shown_inertly_in_their_own_incident_pages(site):
    """A clone per payload carries it in app, environment, culprit, summary, note, evidence
    (value, note, joint, to_separate, segments) and in its sample responses; pages are checked
    element by element. A page costs ~0.3 s (its chart), so a quarter of the clones plus the
    heaviest go through the server here; every payload in every template slot is the job of
    test_every_template_slot_shows_every_payload_as_inert_text."""
    heavy = {"huge", "huge-markup", "zalgo", "nul", "rtl-override", "ansi-hyperlink"}
    for p in [p for n, p in enumerate(PAYLOADS) if n % 4 == 0 or p.name in heavy]:
        page = report(site, f"/reports/incidents/{site.seeded.clones[p.name]}")
        assert shown(p.text[:2000]) in page.text, p.name  # the note (2,000 characters)
        assert shown(p.text[:1200]) in page.text, p.name  # samples are clipped at 1,200
        if p.short:
            assert page.text.count(shown(p.text)) >= 5, p.name


def test_the_overview_shows_incidents_alerts_and_rollouts_inertly(site):
    page = report(site, "/reports/")
    assert missing(page.text, [P[n] for n in SLOTS_A.values()]) == []
    # every clone's headline (culprit value or app) is listed; the recorded error is shown
    assert missing(page.text, [p for p in PAYLOADS if p.short]) == []
    assert shown(P["svg-text-breakout"].text + P["ansi-osc52"].text) in page.text


def test_the_lists_explorer_response_and_prompt_pages_show_hostile_names_inertly(site):
    """The pages added for browsing: hostile app/route/prompt/model names and experiment arms
    as text, hostile filter values reflected inertly, every page passing the markup check."""
    names = [P[n] for n in SLOTS_A.values()]
    page = report(site, "/reports/incidents", status="all")
    assert missing(page.text, [P[SLOTS_A["app"]], P[SLOTS_A["route"]]]) == []
    report(site, "/reports/jobs")
    page = report(site, "/reports/experiments")
    assert shown(experiment_name(P)) in page.text
    page = report(site, "/reports/responses", app=ident(P[SLOTS_A["app"]]))
    assert missing(page.text, [P[SLOTS_A["app"]], P[SLOTS_A["prompt_id"]]]) == []
    for p in [*PAYLOADS[:: max(1, len(PAYLOADS) // 8)], P["nul"], P["rtl-override"]]:
        v = ident(p)[:128]
        report(site, "/reports/responses", route=v, q=v, metric=v, min="0")  # markup checked
        r = site.client.get("/reports/responses", params={"q": v}, headers=auth(site.key))
        assert f'value="{escape(shown(v))}"' in r.text, p.name  # reflected as an inert value
    r = site.client.get(
        "/reports/responses", params={"app": ident(P[SLOTS_A["app"]])}, headers=auth(site.key)
    )
    event_id = re.search(r'href="/reports/responses/([^"]+)"', r.text)
    assert event_id is not None
    page = report(site, f"/reports/responses/{event_id.group(1)}")
    assert missing(page.text, [P[SLOTS_A["app"]], P[SLOTS_A["environment"]]]) == []
    prompt_id = ident(P[SLOTS_A["prompt_id"]])
    page = report(site, f"/reports/prompts/{quote(prompt_id, safe='')}")
    assert shown(prompt_id) in page.text
    assert names  # the slots above are the detected incidents' own names


def test_reflected_query_and_path_values_are_inert(site):
    hostile = "".join(p.text for p in PAYLOADS if p.short)[:200]
    for p in [*PAYLOADS[:: max(1, len(PAYLOADS) // 12)], P["nul"], P["rtl-override"]]:
        v = ident(p)[:128]
        page = report(site, "/reports/compare", metric=v, **{"a.app": v, "b.route": v})
        assert shown(v) in page.text, p.name
        page = report(site, f"/reports/experiments/{quote(ident(p), safe='')}", metric=v, control=v)
        if "/" not in ident(p):
            assert shown(ident(p)) in page.text, p.name
    # the seeded experiment: its name and arms are payloads
    control = ident(P[ARMS[0]])
    path = f"/reports/experiments/{quote(experiment_name(P), safe='')}"
    page = report(site, path, metric="correct", control=control)
    assert missing(page.text, [P["jinja-stmt"], *(P[n] for n in ARMS)]) == []
    assert "Every arm vs control" in page.text
    r = site.client.get("/reports/login", params={"next": f"/reports/{hostile}"})
    assert r.status_code == 200 and check_html(r.text).problems == []
    r = site.client.get("/reports/login", params={"next": P["javascript-url"].text})
    assert 'value="/reports/"' in r.text  # never an open redirect


# -- every template slot, every payload -------------------------------------------------------


_KEEP = {"links", "kind", "metric_kind", "explore", "explore_worse", "href", "next_href"}
# ^ URLs we build (urlencoded), formatting switches
_CHARTS = {"chart_svg", "svg"}  # our SVG (labels: test_chart_labels_...), left out for speed
NO_CHART = '<svg class="chart"></svg>'


def poison(obj: Any, text: str, key: str = "") -> Any:
    """`obj` with every string value replaced by `text` (except our own markup and links)."""
    if key in _KEEP:
        return obj
    if key in _CHARTS:
        return NO_CHART
    if isinstance(obj, str):
        return text
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.replace(
            obj,
            **{f.name: poison(getattr(obj, f.name), text, f.name) for f in dataclasses.fields(obj)},
        )
    if isinstance(obj, dict):
        return {k: poison(v, text, k) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(poison(v, text, key) for v in obj)
    return obj


def test_every_template_slot_shows_every_payload_as_inert_text(site):
    """Views built from the seeded store, every string in them replaced by one payload, rendered
    served and exported: the templates' every `{{ }}` against every payload."""
    store, s = site.store, site.seeded
    views = [  # the three verdicts (the clones take culprit, confounded, no cause in turn)
        ("incident", incident_view(store, PROJECT, s.prompt_culprit, now=NOW), render_incident),
        (
            "incident",
            incident_view(store, PROJECT, s.clones[PAYLOADS[1].name], now=NOW),
            render_incident,
        ),
        (
            "incident",
            incident_view(store, PROJECT, s.clones[PAYLOADS[2].name], now=NOW),
            render_incident,
        ),
        ("overview", overview_view(store, PROJECT, now=NOW), render_overview),
    ]
    a = ResponseFilter(prompt_version=ident(P[SLOTS_A["v1"]]))
    b = ResponseFilter(prompt_version=ident(P[SLOTS_A["v2"]]))
    spec = CompareSpec(metric="correct", source="", a=a, b=b)
    views.append(("comparison", comparison_view(store, PROJECT, spec), render_comparison))
    spec_x = ExperimentSpec(
        experiment=experiment_name(P), metrics=["correct"], control=ident(P[ARMS[0]])
    )
    views.append(("experiment", experiment_view(store, PROJECT, spec_x), render_experiment))
    checked = 0
    view: Any
    render: Any
    for p in PAYLOADS:
        text = p.text[:4096]
        for name, view, render in views:
            bad = poison(view, text)
            if name == "experiment":
                bad.report["arms"] = {text: 10}
                bad.charts = {text: NO_CHART}
                bad.api = view.api  # a path we build (quoted), shown as a link
            exported = (None,) if name in ("incident", "overview") else ()
            for api_base in ("", *exported):  # served, and as `promptblame report` writes it
                page = check_html(render(bad, api_base=api_base))
                assert page.problems == [], (p.name, name, page.problems[:3])
                assert shown(text) in page.text, (p.name, name)
                checked += 1
        page = check_html(render_login(next_url=text, error=text))
        assert page.problems == [] and shown(text) in page.text, p.name
    assert checked == len(PAYLOADS) * (len(views) + 4)


def test_chart_labels_are_escaped_and_show_control_characters():
    """Every payload as a rollout marker, a traffic-share legend entry and an effect row; the
    metric name is each payload in turn (a chart per kind of payload)."""
    from datetime import timedelta

    ts = [SWITCH + timedelta(hours=i) for i in range(10)]
    labels = [ident(p) for p in PAYLOADS]
    svg = ""
    for metric in sorted({p.kind for p in PAYLOADS}):
        svg += charts.incident_chart(
            [charts.Point(t, 0.5, 0.4, 0.6) for t in ts],
            [charts.Marker(ts[n % 10], f"prompt {x}", "prompt") for n, x in enumerate(labels)],
            metric="".join(ident(p) for p in PAYLOADS if p.kind == metric)[:256],
            segments=[charts.Segment(ts[0], ts[5], 0.5, label="level")],
            times=ts,
            shares={x: [1.0 / len(labels)] * 10 for x in labels},
        )
    svg += charts.effect_chart([(x, 0.1, 0.0, 0.2) for x in labels])
    page = check_html(svg)
    assert page.problems == [], page.problems[:3]
    assert not CONTROL.search(svg.replace("\r\n", "\n")) and not BIDI.search(svg)
    text = re.sub(r"\s", "", page.text)  # a label with a newline is two lines of text
    for p in PAYLOADS:
        assert re.sub(r"\s", "", shown(ident(p))) in text, p.name


# -- alerts ----------------------------------------------------------------------------------


SLACK_LINK = re.compile(r"<(https?://[^|>]+/reports/incidents/[\w-]+)\|incident report>")


def slack_problems(message: dict[str, Any]) -> list[str]:
    """Anything in a Slack message that is not plain text or our one link to the report."""
    out = []
    texts = [message["text"]]
    for block in message["blocks"]:
        texts += [block["text"]["text"]] if "text" in block else []
        texts += [e["text"] for e in block.get("elements", [])]
    for t in texts:
        rest = SLACK_LINK.sub("", t)
        if "<" in rest or ">" in rest:
            out.append(f"markup in {t[:80]!r}")
        if re.search(r"&(?!amp;|lt;|gt;)", rest):
            out.append(f"unescaped & in {t[:80]!r}")
        if CONTROL.search(t.replace("\r\n", "")) or BIDI.search(t):
            out.append(f"control character in {t[:80]!r}")
    if message.get("unfurl_links") is not False or message.get("unfurl_media") is not False:
        out.append("Slack would fetch links in the message")
    return out


def test_alert_payloads_carry_the_data_exactly_and_show_it_inertly(site):
    hooks = [b for url, b in site.sent if not url.endswith("/slack")]
    slacks = [b for url, b in site.sent if url.endswith("/slack")]
    assert len(hooks) == len(slacks) >= len(PAYLOADS) + 2  # every clone, what was detected
    by_incident = {b["incident"]["incident_id"]: b for b in hooks}
    for p in PAYLOADS:
        hook = by_incident[site.seeded.clones[p.name]]
        # The webhook document is data: exact, JSON-escaped; its `text` line is for people.
        assert hook["incident"]["app"] == ident(p) and hook["incident"]["summary"] == p.text
        assert json.loads(json.dumps(hook)) == hook
        assert not CONTROL.search(hook["text"]) and not BIDI.search(hook["text"]), p.name
    for msg in slacks:
        assert slack_problems(msg) == [], slack_problems(msg)[:3]
    # Slack's own syntax in user text stays literal text (escaped, as Slack requires).
    incident = {
        "app": P["slack-channel"].text,
        "route": P["slack-link"].text,
        "metric": "correct",
        "direction": "regression",
        "verdict": "culprit",
        "culprit": P["slack-mention"].text,
        "effect": -0.2,
        "p_value": 1e-9,
        "summary": P["ansi-hyperlink"].text + P["rtl-override"].text,
    }
    msg = alert_payloads.slack(incident, "opened", "r", "http://127.0.0.1:8000/reports/incidents/x")
    assert slack_problems(msg) == []
    assert "&lt;!channel&gt;" in msg["text"] and "&lt;@U024BE7LH&gt;" in msg["text"]
    assert "<!channel>" not in json.dumps(msg) and "|click here>" not in json.dumps(msg)
    for p in PAYLOADS:
        one = {
            k: (p.text if isinstance(v, str) and k != "direction" else v)
            for k, v in incident.items()
        }
        for event in ("opened", "updated", "resolved"):
            msg = alert_payloads.slack(one, event, "r", "http://h/reports/incidents/x")
            assert slack_problems(msg) == [], (p.name, slack_problems(msg)[:2])
            hook = alert_payloads.webhook(one, event, "r", "http://h/reports/incidents/x")
            assert hook["incident"]["culprit"] == p.text


# -- exported files and the CLI --------------------------------------------------------------


def run_cli(data: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [*CLI, *args],
        env=env_for(data, **env),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    return done


def terminal_problems(out: str) -> list[str]:
    """Control characters and bidi overrides that would act on a terminal, and their context."""
    return [
        repr(out[max(0, m.start() - 20) : m.end() + 20])
        for m in re.finditer(f"{CONTROL.pattern}|{BIDI.pattern}|\r(?!\n)", out)
    ]


def test_exported_reports_are_inert_self_contained_files(site, tmp_path):
    s = site.seeded
    for what, args in (
        ("overview", ("overview",)),
        ("incident", ("incident", s.prompt_culprit)),
    ):
        out = tmp_path / f"{what}.html"
        done = run_cli(site.cli_data, "report", *args, "--project", PROJECT, "--out", str(out))
        assert done.returncode == 0, done.stderr[-2000:]
        page = check_html(out.read_text(encoding="utf-8"))
        assert page.problems == [], page.problems[:5]
        assert 'href="/' not in out.read_text(encoding="utf-8")  # API paths as text
        assert missing(page.text, [P[n] for n in SLOTS_A.values()]) == []
        assert terminal_problems(done.stdout + done.stderr) == []


class _Hostile(BaseHTTPRequestHandler):
    """An API that answers every call with a hostile error detail."""

    detail = ""

    def do_GET(self) -> None:
        body = json.dumps({"detail": self.detail}).encode()
        self.send_response(409)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_cli_output_never_sends_control_sequences_to_the_terminal(site):
    # `detect` prints the open incidents' summaries: the clones' summaries are the payloads.
    done = run_cli(site.cli_data, "detect", "--project", PROJECT)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert len([ln for ln in lines if ln.startswith("h0")]) >= 15
    assert any("␛[2J" in ln for ln in lines) or any("[U+202E]" in ln for ln in lines)
    assert terminal_problems(done.stdout + done.stderr) == [], terminal_problems(done.stdout)[:5]

    done = run_cli(site.cli_data, "keys", "list")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "␛]0;pwned␇" in done.stdout and "[U+202E]" in done.stdout
    assert terminal_problems(done.stdout + done.stderr) == []

    _Hostile.detail = "".join(p.text for p in PAYLOADS if p.kind in ("ansi", "unicode"))[:5000]
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hostile)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        done = run_cli(site.cli_data, "evaluators", "list", "--url", url, "--key", "pb_x_y")
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == 1 and "409: " in done.stderr and "␛[2J" in done.stderr
    assert terminal_problems(done.stdout + done.stderr) == []
