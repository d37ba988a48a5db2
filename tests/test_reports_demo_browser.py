"""The report pages on the demo's data in a real browser (headless Chromium over DevTools):
every page reachable from the navigation, none scrolling sideways at a phone's 390 px, the
incident charts' level lines at the plotted series' own segment means, date axes naming their
months, HTML error pages, and Acknowledge/Resolve through the page's forms (admin key and CSRF
token required)."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from promptblame.api.auth import new_key
from promptblame.reports.data import incident_view
from promptblame.settings import Settings
from promptblame.store import open_store
from tests.cdp import CHROMIUM, Browser
from tests.conftest import DemoRun
from tests.server_process import CLI, env_for, free_port
from tests.svgdata import read_chart, x_to_time
from tests.test_reports import check_chart_levels

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed")


@dataclass
class Demo:
    base: str
    admin: str  # the demo's key (ingest, read, admin)
    reader: str  # a read-only key of the same project
    views: dict[str, Any]  # incident id -> its view, built before the server started
    data: Path


@pytest.fixture(scope="module")
def demo(demo_run: DemoRun) -> Iterator[Demo]:
    done, root = demo_run.done, demo_run.data
    assert done.returncode == 0, done.stderr[-3000:]
    data = root / "store"
    store = open_store(Settings(data_dir=data))
    try:
        views = {
            i["incident_id"]: incident_view(store, "demo", i["incident_id"])
            for i in store.incidents("demo")
        }
        reader, record = new_key("demo", ["read"], "reader")
        store.put_api_key(record)
    finally:
        store.close()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [*CLI, "serve", "--port", str(port)],
        env=env_for(data, PROMPTBLAME_PUBLIC_URL=base),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"server exited with {proc.returncode}"
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline
            time.sleep(0.1)
        admin = (root / "demo-key.txt").read_text().strip()
        yield Demo(base, admin, reader, views, data)
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.fixture()
def browser(demo: Demo, tmp_path: Path) -> Iterator[Browser]:
    b = Browser(tmp_path / "profile")
    try:
        yield b
    finally:
        b.close()


def login(b: Browser, demo: Demo, key: str) -> None:
    """What POST /reports/login leaves in the browser: the key in the reports' cookie."""
    b.send("Network.enable")
    b.send("Network.setCookie", name="pb_report_key", value=key, url=f"{demo.base}/reports/")


def by_verdict(demo: Demo, verdict: str, cause: str | None = None) -> list[Any]:
    """The detection job's incidents (not the demo rollout's rollback) with this verdict."""
    return [
        v
        for v in demo.views.values()
        if v.row["verdict"] == verdict
        and (cause is None or v.ev.get("cause") == cause)
        and "rollout_id" not in v.ev
    ]


def test_every_page_is_reachable_from_the_navigation_and_none_scrolls_sideways_at_390px(
    demo, browser
):
    login(browser, demo, demo.admin)
    browser.goto(f"{demo.base}/reports/")
    nav = browser.eval("[...document.querySelectorAll('nav.top a')].map(a => a.href)")
    assert [u.removeprefix(demo.base) for u in nav] == [
        "/reports/",
        "/reports/incidents",
        "/reports/responses",
        "/reports/experiments",
        "/reports/rollouts",
        "/reports/review",
        "/reports/agreement",
        "/reports/jobs",
    ]
    pages = list(nav)
    first = {  # one page of each kind linked from those
        "incident": "a[href^='/reports/incidents/']",
        "experiment": "a[href^='/reports/experiments/']",
        "response": "a[href^='/reports/responses/']",
        "prompt": "a[href^='/reports/prompts/']",
        "rollout": "a[href^='/reports/rollouts/']",
        "explorer": "#trends a",
    }
    for where, selector in (
        ("/reports/incidents", first["incident"]),
        ("/reports/experiments", first["experiment"]),
        ("/reports/responses", first["response"]),
        ("/reports/responses", first["prompt"]),
        ("/reports/", first["explorer"]),
    ):
        browser.goto(demo.base + where)
        href = browser.eval(f"document.querySelector({json.dumps(selector)})?.href")
        assert href, (where, selector)
        pages.append(href)
    pages += [f"{demo.base}/reports/incidents/{i}" for i in demo.views]
    pages.append(f"{demo.base}/reports/incidents/no-such-incident")
    for url in pages:
        for width in (390, 1280):
            browser.goto(url, width=width)
            title = browser.eval("document.title")
            assert "pb_" not in browser.eval("document.body.innerText")  # no key on a page
            if "no-such" not in url:
                assert browser.eval("document.getElementById('error')") is None, (url, title)
            wide = browser.eval("document.documentElement.scrollWidth")
            assert wide <= width, (url, width, wide)


def test_the_level_lines_are_the_plotted_series_segment_means_on_every_incident(demo):
    """View model and SVG, every demo incident: the route-scoped culprit (the chart once drew
    the app aggregate's levels above every point of the route's series), the model culprit,
    the traffic mix (route shares and within-route levels) and the drift (a trend, no step)."""
    culprits = by_verdict(demo, "culprit")
    mixes = by_verdict(demo, "no_version_cause", "traffic_mix")
    drifts = by_verdict(demo, "no_version_cause", "drift")
    assert len(culprits) == 2 and mixes
    assert any(v.row["route"] == "refunds" for v in culprits)
    for v in culprits + mixes:
        check_chart_levels(v)
    for v in mixes:
        assert v.chart.share_dim == "route" and set(v.chart.within) >= {"legal", "news"}
        shares = v.chart.shares["legal"]
        assert max(shares) > 0.4 and min(shares) < 0.2  # the driver, charted
    for v in drifts:
        drawn = read_chart(v.chart.svg)
        assert "level-before" not in drawn.lines and "trend" in drawn.lines
        t = v.chart.trend
        assert [y for _, y in drawn.lines["trend"]] == pytest.approx(
            [t.at_start, t.at_end], abs=0.002
        )


def test_the_served_chart_draws_the_view_numbers_and_names_its_months(demo, browser):
    (refunds,) = [v for v in by_verdict(demo, "culprit") if v.row["route"] == "refunds"]
    login(browser, demo, demo.admin)
    browser.goto(f"{demo.base}/reports/incidents/{refunds.row['incident_id']}")
    svg = browser.eval("document.querySelector('#metric-chart svg').outerHTML")
    drawn = read_chart(svg)
    lv = refunds.chart.levels
    assert drawn.lines["level-before"][0][1] == pytest.approx(lv.before, abs=0.002)
    assert drawn.lines["level-after"][0][1] == pytest.approx(lv.after, abs=0.002)
    pts = [p for p in refunds.chart.points if p.mean is not None]
    # the "after" level sits inside the plotted points after the shift, not above them all
    after = [y for x, y in drawn.series if x > drawn.lines["level-after"][0][0]]
    assert min(after) < lv.after < max(after)
    at = x_to_time(drawn, pts[0].t, pts[-1].t)
    for px, label in drawn.x_labels:
        assert label == (at(px) + timedelta(minutes=30)).strftime("%b %d")
    text = browser.eval("document.getElementById('verdict').innerText")
    assert "bucket" not in text and re.search(r"-15\.\d pt", text)


def test_error_pages_in_the_browser_are_html_and_say_what_is_wrong(demo):
    cookies = {"pb_report_key": demo.admin}
    for path, status, words in (
        ("/reports/incidents/no-such-incident", 404, "no incident 'no-such-incident'"),
        ("/reports/nothing-here", 404, "There is no page at /reports/nothing-here"),
        ("/reports/experiments/tone", 422, "metric: Field required"),
        ("/reports/compare?metric=resolved&alpha=7", 422, "alpha: Input should be"),
        ("/reports/responses?since=yesterday", 422, "since: expected a date or time"),
    ):
        r = httpx.get(demo.base + path, cookies=cookies)
        assert r.status_code == status and r.headers["content-type"].startswith("text/html")
        assert words in r.text.replace("&#39;", "'") and 'href="/reports/"' in r.text
    api = httpx.get(
        f"{demo.base}/v1/incidents/nope", headers={"Authorization": f"Bearer {demo.admin}"}
    )
    assert api.status_code == 404 and api.json() == {"detail": "no incident 'nope'"}


def _status(demo: Demo, incident_id: str) -> dict[str, Any]:
    r = httpx.get(
        f"{demo.base}/v1/incidents/{incident_id}",
        headers={"Authorization": f"Bearer {demo.admin}"},
    )
    return dict(r.json())


def test_acknowledge_and_resolve_work_through_the_form_only_with_an_admin_key_and_the_token(
    demo, browser, tmp_path
):
    iid = next(i for i, v in demo.views.items() if v.row["verdict"] == "culprit")
    page = f"{demo.base}/reports/incidents/{iid}"

    # a read-only key: the form is there, the post is refused, nothing changes
    login(browser, demo, demo.reader)
    browser.goto(page)
    assert "need an admin key" in browser.eval("document.getElementById('what-now').innerText")
    browser.click_and_wait("form.act button")
    assert "lacks the 'admin' scope" in browser.eval("document.body.innerText")
    assert _status(demo, iid)["status"] == "open"

    # the admin key, but the form's token removed: refused
    login(browser, demo, demo.admin)
    browser.goto(page)
    browser.eval("document.querySelector('form.act input[name=csrf]').remove()")
    browser.click_and_wait("form.act button")
    assert "security token is missing" in browser.eval("document.body.innerText")
    assert _status(demo, iid)["status"] == "open"

    # the admin key and the page's own form: acknowledged with the note, back on the page
    browser.goto(page)
    browser.eval("document.querySelector('form.act input[name=note]').value = 'looking at it'")
    browser.click_and_wait("form.act button")
    assert browser.eval("location.href") == page
    assert _status(demo, iid)["status"] == "acknowledged"
    assert _status(demo, iid)["status_note"] == "looking at it"
    assert "Note: looking at it" in browser.eval("document.body.innerText")
    # then Resolve (the only form left)
    buttons = browser.eval(
        "[...document.querySelectorAll('form.act button')].map(b => b.innerText)"
    )
    assert buttons == ["Resolve"]
    browser.click_and_wait("form.act button")
    assert _status(demo, iid)["status"] == "resolved"

    # another site posting the form with a stolen-looking token: refused on its Origin
    token = re.search(
        r'name="csrf" value="([0-9a-f]+)"',
        httpx.get(page, cookies={"pb_report_key": demo.admin}).text,
    )
    r = httpx.post(
        f"{page}/status",
        data={"action": "acknowledge", "csrf": token.group(1) if token else ""},
        cookies={"pb_report_key": demo.admin},
        headers={"Origin": "https://evil.example"},
    )
    assert r.status_code == 403 and "another site" in r.text
