"""HTML reports: the numbers on the page are the API's, untrusted text stays text, exported
files are self-contained, and the browser login works without weakening /v1 auth."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import threading
from datetime import UTC, datetime, timedelta
from html import unescape
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from promptblame.analysis.attribution.verdict import fmt_effect
from promptblame.analysis.detection import run_detection
from promptblame.api.auth import new_key
from promptblame.ingest.contracts import ResponseEvent, ScoreEvent
from promptblame.ingest.rows import responses_table, scores_table
from promptblame.reports import charts
from promptblame.reports.data import incident_view, overview_view
from promptblame.reports.render import render_overview
from promptblame.reports.words import fmt_delta, fmt_p, fmt_value
from promptblame.settings import Settings
from promptblame.store import open_store
from tests.helpers import auth
from tests.server_process import CLI, env_for
from tests.svgdata import read_chart, x_to_time
from tests.test_incidents import NOW, SETTINGS, START, SWITCH, traffic

XSS = (
    "<script>document.title='pwned'</script>"
    "<img src=x onerror=\"document.body.setAttribute('data-pwned','1')\">"
)
TEMPLATE_V1 = (
    "You are the support assistant of ACME.\n"
    "Answer the customer's question using only the policy excerpts below.\n"
    "If the policy does not cover it, say so and offer a human agent.\n"
    "Policy:\n{policy}\n\nQuestion: {question}"
)
TEMPLATE_V2 = (
    "You are the support assistant of ACME.\n"
    "Answer the customer's question briefly and confidently.\n"
    "Policy:\n{policy}\n\nQuestion: {question}"
)
QUESTIONS = [
    ("c1", "billing", "Why was I charged twice in October?"),
    ("c2", "refunds", "Can I get a refund for an annual plan after 20 days?"),
    ("c3", "billing", "How do I change the card on file?"),
    ("c4", "refunds", "My refund has not arrived after 10 days."),
]


def report_traffic(store, project: str = "acme") -> str:
    """The incident test traffic (prompt answer@v2 regresses `correct`), the prompt registry
    entries of v1 and v2, and eval-case responses on both sides — one with an XSS payload.
    Returns the culprit incident's id."""
    traffic(store, project)
    for version, template in (("v1", TEMPLATE_V1), ("v2", TEMPLATE_V2)):
        store.put_prompt_version(
            project,
            prompt_id="answer",
            version=version,
            template=template,
            content_hash=hashlib.sha256(template.encode()).hexdigest(),
            author="dana@acme.test",
            labels=[],
            created_at=START if version == "v1" else SWITCH - timedelta(hours=1),
        )
    events = []
    for i, (case, route, question) in enumerate(QUESTIONS):
        for version, ts in (
            ("v1", SWITCH - timedelta(hours=1)),
            ("v2", SWITCH + timedelta(hours=1)),
        ):
            good = version == "v1"
            output = (
                f"According to the policy, {question.lower()} — here is what applies: ..."
                if good
                else "Sure! That's definitely fine, no problem at all."
            )
            if i == 0 and not good:
                output = f"Sure! {XSS}"
            events.append(
                ResponseEvent(
                    event_id=f"case-{case}-{version}",
                    ts=ts + timedelta(minutes=i),
                    app="bot",
                    route=route,
                    model="gpt-4o",
                    prompt_id="answer",
                    prompt_version=version,
                    case_id=case,
                    input=question,
                    output=output,
                )
            )
    now = datetime.now(UTC)
    store.insert("responses", responses_table(project, events, now))
    # The eval cases are scored too: c1 and c3 regress under v2, c2 and c4 do not.
    case_scores = [
        ScoreEvent(
            event_id=e.event_id,
            name="correct",
            value=float(e.prompt_version == "v1" or e.case_id in ("c2", "c4")),
        )
        for e in events
    ]
    store.insert("scores", scores_table(project, case_scores, now))
    store.materialize_scores()
    run_detection(store, SETTINGS, now=NOW)
    (inc,) = [i for i in store.incidents(project) if i["verdict"] == "culprit"]
    return str(inc["incident_id"])


def page(client, path: str, key: str) -> str:
    r = client.get(path, headers=auth(key))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/html")
    return r.text


def table_rows(html: str, table_id: str) -> list[list[str]]:
    """Cell texts of each body row of the table inside the element with `table_id`."""
    section = html[html.index(f'id="{table_id}"') :]
    body = section[section.index("<tbody>") : section.index("</tbody>")]
    return [
        [
            unescape(re.sub(r"<[^>]+>", "", c)).strip()
            for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
        ]
        for row in re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S)
    ]


def test_the_incident_report_shows_the_api_verdict_and_per_version_numbers(
    client, key, embedded_store
):
    incident_id = report_traffic(embedded_store)
    html = page(client, f"/reports/incidents/{incident_id}", key)
    api = client.get(f"/v1/incidents/{incident_id}", headers=auth(key)).json()
    c = api["evidence"]["culprit"]
    text = unescape(html)
    assert "Prompt answer@v2 regressed correct on bot by -22.5 pt" in text
    for x in (c["effect"], c["ci_low"], c["ci_high"]):
        assert fmt_effect(x, kind="proportion") in text
    assert fmt_p(c["p_adjusted"]) in text and f"{c['explained_share']:.0%}" in text
    assert text.count("<svg") == 1 and "answer@v1 → answer@v2" in text

    # The per-version table is what the linked /v1/versions answers for the same window.
    found = re.search(r'href="(/v1/versions\?[^"]+)"', html)
    assert found is not None
    link = unescape(found.group(1))
    versions = client.get(link, headers=auth(key)).json()["versions"]
    rows = {r[0]: r for r in table_rows(html, "versions")}
    assert len(rows) == len(versions) == 2
    for v in versions:
        row = rows[f"answer@{v['prompt_version']}"]
        s = v["score"]
        # a rate is shown as a percentage, with the decimals its interval's width allows
        width = s["ci_high"] - s["ci_low"]
        assert row[2] == f"{s['n']:,}" and row[3] == fmt_value(s["mean"], kind="proportion")
        assert row[4] == (
            f"{fmt_value(s['ci_low'], kind='proportion', width=width)} to"
            f" {fmt_value(s['ci_high'], kind='proportion', width=width)}"
        )
    assert rows["answer@v1"][5:8] == ["100%", "0%", "predecessor"]
    assert rows["answer@v2"][5:8] == ["0%", "100%", "culprit"]

    # The diff comes from the registry; the sample pairs the same eval cases.
    assert "-If the policy does not cover it, say so and offer a human agent." in text
    samples = re.findall(r'<div class="match">(.*?)</div>', text)
    assert samples[:2] == [
        "same eval case c3: correct 1.00 → 0.00",
        "same eval case c1: correct 1.00 → 0.00",
    ]
    # failed responses after the shift are outlined as the problem, and said to be
    assert '<span class="pill bad">correct 0.00' in html and "worse side of correct" in text
    assert "pill good" not in html


def test_an_improvements_samples_are_outlined_as_the_change_not_as_the_worse_side(
    client, key, embedded_store
):
    incident_id = report_traffic(embedded_store)
    row = embedded_store.incident("acme", incident_id)
    row.update(project_id="acme", incident_id="better", direction="improvement")
    embedded_store.insert_rows("incidents", [row])  # the same data read as an improvement
    html = page(client, "/reports/incidents/better", key)
    text = unescape(html)
    # the responses after it that passed are what an improvement moved toward
    assert '<span class="pill good">correct 1.00' in html and "pill bad" not in html
    assert "the side correct moved toward (outlined in green)" in text
    assert "worse side" not in text and "most improved first" in text


def test_llm_output_and_hostile_version_names_are_shown_as_text(client, key, embedded_store):
    incident_id = report_traffic(embedded_store)
    html = page(client, f"/reports/incidents/{incident_id}", key)
    assert "<script>document.title" not in html and "<img src=x" not in html
    assert "&lt;script&gt;document.title=&#39;pwned&#39;&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=" in html
    assert "<script" not in html.lower()
    # An incident whose labels are hostile (a version name is caller-chosen text).
    row = embedded_store.incident("acme", incident_id)
    evil = "<img src=x onerror=alert(1)>"
    ev = json.loads(row["evidence"])
    ev["culprit"]["value"] = ev["candidates"][0]["value"] = f"answer@{evil}"
    row.update(
        project_id="acme",
        incident_id="evil",
        culprit=f"prompt answer@{evil}",
        summary=evil,
        evidence=json.dumps(ev),
        status_note=evil,
    )
    embedded_store.insert_rows("incidents", [row])
    for path in ("/reports/incidents/evil", "/reports/"):
        html = page(client, path, key)
        assert "<img" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    r = client.get("/reports/incidents/evil", headers=auth(key))
    assert "script-src" not in r.headers["content-security-policy"]  # no script may run
    assert "default-src 'none'" in r.headers["content-security-policy"]


def test_chart_labels_are_escaped_by_the_svg_writer_and_dollars_stay_text():
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    ts = [t0 + timedelta(hours=i) for i in range(10)]
    hostile = "<script>alert(1)</script> $x$ & co"
    svg = charts.incident_chart(
        [charts.Point(t, 0.5, 0.4, 0.6) for t in ts],
        [charts.Marker(ts[5], f"prompt {hostile}", "prompt")],
        metric=hostile,
        segments=[charts.Segment(ts[0], ts[5], 0.5, label=hostile)],
        times=ts,
        shares={hostile: [1.0] * 10},
    )
    assert "<script" not in svg and "&lt;script&gt;alert(1)&lt;/script&gt;" in svg
    assert "$x$ &amp; co" in svg
    assert svg.startswith("<svg") and 'viewBox="' in svg and " width=" not in svg[:300]


def test_overview_lists_open_incidents_trends_rollouts(client, key, embedded_store):
    report_traffic(embedded_store)
    html = page(client, "/reports/", key)
    text = unescape(html)
    assert "Prompt answer@v2 regressed correct on bot by -22.5 pt" in text
    assert 'class="badge sev-critical"' in html
    assert "bot · correct" in text and html.count("<svg") == 1
    rows = table_rows(html, "rollouts")
    assert [r[1] for r in rows] == ["answer@v2", "answer@v1"]


def test_a_page_runs_the_scored_table_job_once_for_all_its_reads(client, key, embedded_store):
    report_traffic(embedded_store)
    runs: list[str] = []
    run_job = embedded_store._run_job

    def spy(*args):  # the real store, its job's runs counted per thread
        runs.append(threading.current_thread().name)
        return run_job(*args)

    embedded_store._run_job = spy
    page(client, "/reports/", key)
    assert len([t for t in runs if t.startswith("AnyIO")]) == 1  # five cell reads, one run


def test_the_browser_login_sets_a_strict_httponly_cookie_and_api_auth_is_unchanged(
    client, key, embedded_store
):
    r = client.get("/reports/", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/reports/login?next=%2Freports%2F"
    assert 'name="key"' in client.get("/reports/login").text
    bad = client.post("/reports/login", data={"key": "pb_nope_nope", "next": "/reports/"})
    assert bad.status_code == 401 and "unknown or revoked" in bad.text
    ok = client.post(
        "/reports/login",
        data={"key": key, "next": "https://evil.example/"},
        follow_redirects=False,
    )
    assert ok.status_code == 303 and ok.headers["location"] == "/reports/"
    cookie = ok.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/reports" in cookie
    assert client.get("/reports/").status_code == 200  # the cookie is sent back
    assert client.get("/v1/incidents").status_code == 401  # /v1 never reads the cookie
    client.post("/reports/logout")
    assert client.get("/reports/", follow_redirects=False).status_code == 303
    ingest_only, record = new_key("acme", ["ingest"])
    embedded_store.put_api_key(record)
    denied = client.post("/reports/login", data={"key": ingest_only})
    assert denied.status_code == 401 and "read" in denied.text


def test_comparison_and_experiment_reports_show_the_api_numbers(client, key, embedded_store):
    rng = np.random.default_rng(3)
    events, scores = [], []
    for i in range(900):
        arm = "control" if i % 3 else "b"  # 2:1 where the split says 1:1: a mismatch
        events.append(
            ResponseEvent(
                event_id=f"x{i}",
                ts=datetime(2026, 11, 20, tzinfo=UTC) + timedelta(minutes=i),
                app="bot",
                model="gpt-4o",
                prompt_id="answer",
                prompt_version="v1" if arm == "control" else "v2",
                experiment="exp1",
                variant=arm,
            )
        )
        p = 0.8 if arm == "control" else 0.7
        scores.append(ScoreEvent(event_id=f"x{i}", name="correct", value=float(rng.random() < p)))
    now = datetime.now(UTC)
    embedded_store.insert("responses", responses_table("acme", events, now))
    embedded_store.insert("scores", scores_table("acme", scores, now))
    body = {"metric": "correct", "a": {"prompt_version": "v1"}, "b": {"prompt_version": "v2"}}
    api = client.post("/v1/compare", json=body, headers=auth(key)).json()
    html = page(
        client, "/reports/compare?metric=correct&a.prompt_version=v1&b.prompt_version=v2", key
    )
    width = api["ci_high"] - api["ci_low"]  # a rate: points, the digits the CI allows
    for x in (api["effect"], api["ci_low"], api["ci_high"]):
        assert fmt_delta(x, kind="proportion", width=width) in html
    assert fmt_p(api["p_value"]) in html and "<svg" in html and "power" in html
    bad = client.get("/reports/compare?metric=correct&a.nope=1", headers=auth(key))
    assert bad.status_code == 200  # unknown group fields are ignored, like absent ones

    exp = client.get("/v1/experiments/exp1?metric=correct", headers=auth(key)).json()
    html = page(client, "/reports/experiments/exp1?metric=correct", key)
    assert "Sample ratio mismatch" in html and exp["srm"]["mismatch"]
    (row,) = table_rows(html, "results")
    (res,) = exp["results"]
    width = res["ci_high"] - res["ci_low"]
    assert row[0:3] == ["correct", "b", fmt_delta(res["effect"], kind="proportion", width=width)]
    assert row[5] == fmt_p(res["p_holm"]) and row[6] == fmt_p(res["p_bh"])


def exported(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        env=env_for(tmp_path / "data"),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_exported_reports_are_self_contained_files(tmp_path):
    store = open_store(Settings(data_dir=tmp_path / "data"))
    try:
        incident_id = report_traffic(store)
    finally:
        store.close()
    out = tmp_path / "incident.html"
    done = exported(
        tmp_path, "report", "incident", incident_id, "--project", "acme", "--out", str(out)
    )
    assert done.returncode == 0, done.stderr
    overview = tmp_path / "overview.html"
    done = exported(tmp_path, "report", "overview", "--project", "acme", "--out", str(overview))
    assert done.returncode == 0, done.stderr
    missing = exported(
        tmp_path, "report", "incident", "nope", "--project", "acme", "--out", str(out)
    )
    assert missing.returncode != 0 and "no incident 'nope'" in missing.stderr
    for f in (out, overview):
        html = f.read_text()
        assert "<svg" in html and "regressed correct" in html
        assert not re.search(
            r"<script|<link|<iframe|<object|@import|url\(\s*['\"]?(?!#)", html, re.I
        )
        assert not re.search(r"\b(src|href|action)\s*=\s*[\"']?\s*(https?:)?//", html, re.I)
        assert "/v1/incidents" in html and 'href="/' not in html  # API paths as text
    # Exported side by side, the overview can link to the exported incidents.
    store = open_store(Settings(data_dir=tmp_path / "data"))
    try:
        view = overview_view(store, "acme")
    finally:
        store.close()
    html = render_overview(view, api_base=None, incident_link="i-{id}.html")
    assert f'href="i-{incident_id}.html"' in html


def evidence(dimension: str, value: str, predecessor: str, status: str, **kw):
    from promptblame.analysis.attribution.verdict import Evidence

    return Evidence(
        dimension=dimension,  # type: ignore[arg-type]
        value=value,
        predecessor=predecessor,
        status=status,  # type: ignore[arg-type]
        share_before=0.0,
        share_after=1.0,
        arrival_index=269,
        rollback=False,
        **kw,
    )


def store_verdict(store, incident_id: str, verdict) -> None:
    from promptblame.analysis.incidents import describe

    now = datetime.now(UTC)
    store.insert_rows(
        "incidents",
        [
            {
                "project_id": "acme",
                "incident_id": incident_id,
                "app": "bot",
                "metric": "correct",
                "source": "app",
                "bucket_seconds": 3600,
                "shift_start": SWITCH,
                **describe(verdict, ""),
                "status": "open",
                "status_note": "",
                "revision": 1,
                "created_at": now,
                "updated_at": now,
            }
        ],
    )


def test_confounded_and_traffic_mix_verdicts_explain_themselves_even_without_traffic(
    client, key, embedded_store
):
    from promptblame.analysis.attribution.decompose import Decomposition, SegmentShift
    from promptblame.analysis.attribution.verdict import Verdict

    common = dict(
        direction="regression",
        index=269,
        start=SWITCH,
        metric_kind="proportion",
        higher_is_better=True,
        aggregate_effect=-0.2,
        level_before=0.9,
        level_after=0.7,
        window=24,
    )
    confounded = Verdict(
        kind="confounded",
        candidates=(
            evidence("prompt", "answer@v2", "answer@v1", "not_separable"),
            evidence("model", "gpt-4o@2024-11", "gpt-4o", "not_separable"),
        ),
        joint=evidence(
            "prompt+model",
            "answer@v2 + gpt-4o@2024-11",
            "answer@v1 + gpt-4o",
            "blamed",
            effect=-0.2,
            ci_low=-0.23,
            ci_high=-0.17,
            p_value=1e-9,
        ),
        to_separate="send some traffic to answer@v2 on gpt-4o",
        summary="confounded",
        **common,  # type: ignore[arg-type]
    )
    mix = Verdict(
        kind="no_version_cause",
        cause="traffic_mix",
        decomposition=Decomposition(
            total=-0.2,
            mix=-0.19,
            within=-0.01,
            segments=(
                SegmentShift("billing", "prod", 0.8, 0.2, 0.95, 0.94, -0.57, -0.005),
                SegmentShift("refunds", "prod", 0.2, 0.8, 0.6, 0.59, 0.36, -0.005),
            ),
        ),
        summary="traffic mix",
        **common,  # type: ignore[arg-type]
    )
    store_verdict(embedded_store, "conf", confounded)
    store_verdict(embedded_store, "mix", mix)
    text = unescape(page(client, "/reports/incidents/conf", key))
    assert "Confounded: prompt answer@v2, model gpt-4o@2024-11 changed together" in text
    assert "Together they changed it by -20.0 pt (95% CI -23.0 pt to -17.0 pt), p = 1e-09" in text
    assert "To separate them: send some traffic to answer@v2 on gpt-4o." in text
    assert "answer@v1 → answer@v2" in text and "not in the prompt registry" in text
    text = unescape(page(client, "/reports/incidents/mix", key))
    assert "no version caused it (a traffic-mix change)" in text
    assert "Of the -20.0 pt change, -19.0 pt is mix and -1.0 pt is within segments" in text
    assert [r[0] for r in table_rows(text, "decomposition")] == ["billing", "refunds"]
    overview = unescape(page(client, "/reports/", key))
    assert overview.count('<div class="incident-line">') == 2
    assert client.get("/reports/incidents/nope", headers=auth(key)).status_code == 404


def test_alerts_link_to_the_incident_report(client, key, embedded_store):
    from promptblame.analysis.alerting.catalog import apply as apply_alerts
    from promptblame.analysis.alerting.job import run_alerts
    from tests.test_incidents import fast_post, receiver, rules

    incident_id = report_traffic(embedded_store)
    with receiver() as (url, rec):
        apply_alerts(embedded_store, "acme", rules(url, metric="correct"))
        assert run_alerts(embedded_store, SETTINGS, now=NOW, poster=fast_post).sent == 2
    (hook,) = [b for b in rec.bodies if "event" in b]
    assert hook["link"].endswith(f"/reports/incidents/{incident_id}")
    path = hook["link"][hook["link"].index("/reports/") :]
    assert "regressed correct" in page(client, path, key)
    alerts = table_rows(page(client, "/reports/", key), "alerts")
    assert len(alerts) == 2 and all(r[4] == "sent" for r in alerts)


def check_chart_levels(view: Any) -> None:
    """The dashed level lines sit at the response-weighted means of the plotted series on each
    side of the shift: in the view model, in the SVG (read back through its axis), and in the
    text."""
    ch, lv = view.chart, view.chart.levels
    assert lv is not None and lv.before is not None and lv.after is not None
    pts = [p for p in ch.points if p.mean is not None]

    def mean(ps: list[Any]) -> float:
        return sum(p.mean * p.n for p in ps) / sum(p.n for p in ps)

    assert lv.before == pytest.approx(mean([p for p in pts if p.t < lv.split]))
    assert lv.after == pytest.approx(mean([p for p in pts if p.t >= lv.split]))
    drawn = read_chart(ch.svg)
    tol = 0.002 * (max(p.mean for p in pts) - min(p.mean for p in pts))
    assert [y for _, y in drawn.series] == pytest.approx([p.mean for p in pts], abs=tol)
    for gid, level in (("level-before", lv.before), ("level-after", lv.after)):
        assert [y for _, y in drawn.lines[gid]] == pytest.approx([level, level], abs=tol)
    text = " ".join(view.explanation)
    for level in (lv.before, lv.after):
        assert fmt_value(level, metric=view.row["metric"], kind=view.kind) in text


def test_the_incident_chart_draws_the_plotted_series_own_levels_and_says_them(embedded_store):
    incident_id = report_traffic(embedded_store)
    view = incident_view(embedded_store, "acme", incident_id, now=NOW)
    check_chart_levels(view)
    bands = [(p.low, p.mean, p.high) for p in view.chart.points if p.low is not None]
    assert view.chart.rate and bands
    assert all(0 <= lo <= m <= hi <= 1 for lo, m, hi in bands if m is not None and hi is not None)


def test_a_version_tested_where_the_detector_saw_no_shift_draws_no_change_point(embedded_store):
    incident_id = report_traffic(embedded_store)
    assert ">change point" in incident_view(embedded_store, "acme", incident_id, now=NOW).chart.svg
    row = embedded_store.incident("acme", incident_id)
    assert row is not None
    ev = {**json.loads(row["evidence"]), "reason": "arrival_underpowered"}
    notice = {**row, "project_id": "acme", "incident_id": "notice", "evidence": json.dumps(ev)}
    embedded_store.insert_rows("incidents", [notice])
    svg = incident_view(embedded_store, "acme", "notice", now=NOW).chart.svg
    assert ">change point" not in svg and ">prompt answer@v2" in svg  # the arrival still is


@pytest.mark.parametrize(
    ("first", "days"),
    [(datetime(2026, 11, 3, tzinfo=UTC), 14), (datetime(2026, 11, 20, tzinfo=UTC), 14)],
)
def test_the_date_axis_names_each_ticks_own_month(first, days):
    """November data says November (the month offset once said "2026-Dec"); a series that
    crosses into December says so at the ticks that are in December."""
    ts = [first + timedelta(hours=i) for i in range(24 * days)]
    svg = charts.incident_chart(
        [charts.Point(t, 0.5 + 0.1 * (i % 3), None, None, 10) for i, t in enumerate(ts)],
        [],
        metric="resolved",
        segments=[],
        times=ts,
        shares={"a@v1": [1.0] * len(ts)},
    )
    drawn = read_chart(svg)
    at = x_to_time(drawn, ts[0], ts[-1])
    assert len(drawn.x_labels) >= 4
    for px, label in drawn.x_labels:
        assert label == (at(px) + timedelta(minutes=30)).strftime("%b %d"), label
    months = {label.split()[0] for _, label in drawn.x_labels}
    assert months == ({"Nov"} if first.day == 3 else {"Nov", "Dec"})


def test_a_response_page_shows_every_score_and_the_same_eval_case_under_the_other_version(
    client, key, embedded_store
):
    report_traffic(embedded_store)
    html = page(client, "/reports/responses/case-c1-v2", key)
    text = unescape(html)
    assert "correct" in text and 'id="scores"' in html
    assert "The same eval case under other versions" in text
    # the other version's answer to c1, with its own score (v1 answered it correctly)
    assert "case-c1-v1" in text and "According to the policy" in text
    listed = page(client, "/reports/responses?q=definitely+fine&prompt_version=v2", key)
    ids = re.findall(r'href="/reports/responses/([^"]+)"', listed)
    assert sorted(ids) == [f"case-c{i}-v2" for i in (2, 3, 4)]  # c1's v2 answer is the XSS one
    embedded_store.materialize_scores()  # the score filter reads `scored` (a job, every minute)
    failing = page(client, "/reports/responses?metric=correct&max=0&q=Sure!&app=bot", key)
    got = set(re.findall(r'href="/reports/responses/(case-[^"]+)"', failing))
    assert got == {"case-c1-v2", "case-c3-v2"}  # text and score: only the cases that regressed


def test_a_rollout_page_charts_each_guardrails_estimates_ending_at_the_watchs_number(
    client, key, embedded_store
):
    """The guardrail chart's points are the watch's estimates on the data up to each time
    bucket, the last one the estimate the API and the table show now; the allowed drop is
    drawn where the guardrail says."""
    from promptblame.releases import labels, rollouts
    from promptblame.releases.rollouts import RolloutIn
    from promptblame.reports.data import rollout_charts

    store, rng, rid = embedded_store, np.random.default_rng(11), "gr-rollout"
    for v in ("v1", "v2"):
        store.put_prompt_version(
            "acme", prompt_id="gr", version=v, template=v, content_hash=v, author="", labels=[],
            created_at=START,
        )  # fmt: skip
    labels.move(store, "acme", labels.Move(prompt_id="gr", label="production", version="v1"),
                protected=frozenset())  # fmt: skip
    t0 = datetime.now(UTC) - timedelta(minutes=50)
    events, scores = [], []
    for i in range(1200):
        variant = "candidate" if i % 2 else "incumbent"
        events.append(ResponseEvent(
            event_id=f"gr{i}", ts=t0 + timedelta(seconds=2 * i), app="bot", model="m",
            prompt_id="gr", prompt_version="v2" if i % 2 else "v1",
            experiment=f"{rid}/0", variant=variant,
        ))  # fmt: skip
        good = rng.random() < (0.75 if variant == "candidate" else 0.8)
        scores.append(ScoreEvent(event_id=f"gr{i}", name="gr_ok", value=float(good)))
    now = datetime.now(UTC)
    store.insert("responses", responses_table("acme", events, now))
    store.insert("scores", scores_table("acme", scores, now))
    store.materialize_scores()
    spec = RolloutIn.model_validate({
        "prompt_id": "gr", "label": "production", "candidate": "v2", "steps": [50, 100],
        "guardrails": [{"metric": "gr_ok", "max_drop": 0.02}], "rollout_id": rid,
        "min_responses_per_step": 10**6,
    })  # fmt: skip
    st = rollouts.start(store, "acme", spec, key_id="k", protected=frozenset())
    api = rollouts.public(store, "acme", st, live=True)["guardrails"][0]
    path = rollouts.guardrail_paths(store, "acme", st)["gr_ok"]["candidate"]
    assert len(path) >= 20 and path[-1][1].effect == pytest.approx(api["effect"])
    (chart,) = rollout_charts(store, "acme", st)
    drawn = read_chart(
        chart["svg"], ("allowed-drop",), series_id="effect-candidate",
        axes=("matplotlib.axis_2", "matplotlib.axis_1"),
    )  # fmt: skip
    # The y-limits follow the later three quarters of the looks; an early look far outside them
    # is clipped at the figure's edge (which moves or adds a vertex), so those are compared.
    later = len(path) - len(path) // 4
    assert [y for _, y in drawn.series][-later:] == pytest.approx(
        [100 * (c.effect or 0) for _, c in path][-later:], abs=0.05
    )
    assert drawn.lines["allowed-drop"][0][1] == pytest.approx(-2.0, abs=0.05)
    html = unescape(page(client, f"/reports/rollouts/{rid}", key))
    assert "Guardrails over time" in html and html.count('<svg role="img"') == 1
    assert f"{100 * api['effect']:+.1f} pt".replace("-", "−") in html


def test_the_overview_lists_series_detection_cannot_analyse_with_the_reason(embedded_store):
    traffic(embedded_store)  # bot · correct: analysed
    events = [
        ResponseEvent(event_id=f"tiny{i}", ts=START + timedelta(hours=7 * i), app="tiny", model="m")
        for i in range(30)
    ]
    scores = [ScoreEvent(event_id=f"tiny{i}", name="helpful", value=1.0) for i in range(30)]
    embedded_store.insert("responses", responses_table("acme", events, datetime.now(UTC)))
    embedded_store.insert("scores", scores_table("acme", scores, datetime.now(UTC)))
    embedded_store.materialize_scores()
    view = overview_view(embedded_store, "acme", now=NOW, settings=SETTINGS)
    assert view.analysed == 1
    assert [(r["app"], r["metric"], r["reason"]) for r in view.not_analysed or []] == [
        ("tiny", "helpful", "too_few_scores")
    ]
    html = render_overview(view, api_base=None)
    rows = table_rows(html, "not-analysed")
    assert rows == [
        ["tiny · helpful app", "30", "too few scores: 30 scores in the window, 100 needed"]
    ]
    assert "Detection watches 1 other series" in unescape(html)
    # without settings (nothing asked) the section is not shown
    assert 'id="not-analysed"' not in render_overview(
        overview_view(embedded_store, "acme", now=NOW), api_base=None
    )


def test_each_trend_shows_its_own_series_last_two_weeks_even_when_it_ended_long_ago(
    embedded_store,
):
    """The overview reads only the windows it draws (the newest series' last 14 days would not
    do: a series that stopped 40 days ago is drawn over its own last 14 days)."""
    now = datetime(2026, 3, 1, tzinfo=UTC)
    day = timedelta(days=1)
    spans = {"live": (now - 20 * day, now), "gone": (now - 60 * day, now - 40 * day)}
    events, scores = [], []
    for app, (first, last) in spans.items():
        t, i = first, 0
        while t < last:  # one response an hour, its score the hour of the day / 23
            events.append(ResponseEvent(event_id=f"{app}{i}", ts=t, app=app, model="m"))
            scores.append(ScoreEvent(event_id=f"{app}{i}", name="q", value=t.hour / 23))
            t, i = t + timedelta(hours=1), i + 1
    embedded_store.insert("responses", responses_table("acme", events, datetime.now(UTC)))
    embedded_store.insert("scores", scores_table("acme", scores, datetime.now(UTC)))
    embedded_store.materialize_scores()
    trends = {t.app: t for t in overview_view(embedded_store, "acme", now=now).trends}
    for app in spans:
        # 6-hour buckets from the last one back 14 days: 57 buckets, the first whole ones of 6
        # hourly responses each and the last (18:00-24:00) whole too
        assert trends[app].n == 57 * 6, app
        assert trends[app].last == pytest.approx(sum(range(18, 24)) / 6 / 23), app
