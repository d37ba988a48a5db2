"""The hostile corpus in a real browser: report pages full of payloads run no script and send no
request, both as served (with their Content-Security-Policy) and with the CSP removed (so the
escaping alone is what holds).

A server in local no-auth mode serves a project seeded with the corpus (tests/hostile.py) whose
payloads, if they ever ran or loaded, would set the title to "pwned", mark <html data-pwned>,
and hit a beacon: a local HTTP listener that records every request. Headless Chromium is driven
through chromedriver (W3C WebDriver over plain HTTP), one browser for every page; each visit
reads the live DOM, the console (a CSP violation would mean something was injected and then
blocked) and the network log (every request the page made).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from promptblame.analysis.service import CompareSpec, ExperimentSpec
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
from promptblame.store import ResponseFilter, open_store
from tests.hostile import (
    ARMS,
    SLOTS_A,
    Seeded,
    by_name,
    corpus,
    experiment_name,
    ident,
    seed,
)
from tests.server_process import CLI, env_for, free_port
from tests.test_hostile_content import NO_CHART, poison
from tests.test_incidents import NOW

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="Chromium/chromedriver not installed (apt-get install -y chromium chromium-driver)",
)
PROJECT = "evil"
CSP_META = re.compile(r'<meta http-equiv="Content-Security-Policy"[^>]*>')
# What a page may do on its own: nothing but itself (and the browser's favicon probe).
FAVICON = "/favicon.ico"
INJECTED = """
const els = [...document.querySelectorAll('*')];
return {
  title: document.title,
  pwned: document.documentElement.getAttribute('data-pwned'),
  location: location.href,
  injected: document.querySelectorAll(
    'script, iframe, frame, img, object, embed, link, base, meta[http-equiv=refresh], image'
  ).length,
  handlers: els.filter(e => [...e.attributes].some(a => a.name.startsWith('on'))).length,
  resources: performance.getEntriesByType('resource').map(e => e.name),
};
"""


class Beacon:
    """Records every request any page makes to it."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        beacon = self

        class Handler(BaseHTTPRequestHandler):
            def _hit(self) -> None:
                beacon.hits.append(f"{self.command} {self.path}")
                self.send_response(204)
                self.end_headers()

            do_GET = do_POST = do_HEAD = do_OPTIONS = _hit

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/beacon"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Visit:
    url: str
    state: dict[str, Any]
    console: list[str]
    requests: list[str]


@dataclass
class Browser:
    """Headless Chromium through chromedriver's W3C WebDriver HTTP API."""

    base: str
    session: str
    proc: subprocess.Popen[bytes]
    visits: list[Visit] = field(default_factory=list)

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        r = httpx.request(
            method, f"{self.base}/session/{self.session}{path}", json=body, timeout=120
        )
        r.raise_for_status()
        return r.json()["value"]

    def visit(self, url: str, *, settle: float = 0.1) -> Visit:
        self._call("POST", "/url", {"url": url})
        time.sleep(settle)  # a meta refresh or a timer would act now
        state = self._call("POST", "/execute/sync", {"script": INJECTED, "args": []})
        console = [e["message"] for e in self._call("POST", "/se/log", {"type": "browser"})]
        requests = []
        for e in self._call("POST", "/se/log", {"type": "performance"}):
            m = json.loads(e["message"])["message"]
            if m["method"] == "Network.requestWillBeSent":
                u = m["params"]["request"]["url"]
                if u.split(":", 1)[0] in ("http", "https", "file", "ws", "wss", "ftp"):
                    requests.append(u)
        v = Visit(url, state, console, requests)
        self.visits.append(v)
        return v


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    assert CHROMEDRIVER is not None and CHROMIUM is not None
    port = free_port()
    proc = subprocess.Popen(
        [CHROMEDRIVER, f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/status", timeout=1).json()["value"]["ready"]:
                    break
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            assert time.monotonic() < deadline, "chromedriver did not start"
            time.sleep(0.05)
        profile = tmp_path_factory.mktemp("chromium-profile")
        args = [
            *("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"),
            *("--no-first-run", "--disable-background-networking", "--disable-sync"),
            *("--disable-component-update", "--disable-extensions", f"--user-data-dir={profile}"),
        ]
        caps = {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
            "goog:loggingPrefs": {"browser": "ALL", "performance": "ALL"},
        }
        r = httpx.post(f"{base}/session", json={"capabilities": {"alwaysMatch": caps}}, timeout=120)
        r.raise_for_status()
        b = Browser(base, r.json()["value"]["sessionId"], proc)
        b._call("POST", "/url", {"url": "about:blank"})
        b._call("POST", "/se/log", {"type": "performance"})  # drop the start-up noise
        b._call("POST", "/se/log", {"type": "browser"})
        yield b
        httpx.delete(f"{base}/session/{b.session}", timeout=60)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@dataclass
class Site:
    base: str
    seeded: Seeded
    beacon: Beacon
    files: dict[str, Path]  # name -> a page rendered in-process with every payload in it
    served: dict[str, str] = field(default_factory=dict)  # path -> the HTML the server sent


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("hostile-browser")
    beacon = Beacon()
    payloads = corpus(beacon.url)
    P = by_name(payloads)
    store = open_store(Settings(data_dir=root / "data"))
    files: dict[str, Path] = {}
    try:
        seeded = seed(store, PROJECT, payloads, beacon.url + "/hook", [])
        # Every short payload in one text, put in every slot of every page kind.
        everything = "".join(p.text for p in payloads if p.short)
        spec = CompareSpec(
            metric="correct",
            source="",
            a=ResponseFilter(prompt_version=ident(P[SLOTS_A["v1"]])),
            b=ResponseFilter(prompt_version=ident(P[SLOTS_A["v2"]])),
        )
        x = ExperimentSpec(
            experiment=experiment_name(P), metrics=["correct"], control=ident(P[ARMS[0]])
        )
        views: dict[str, tuple[Any, Any]] = {
            "incident": (
                incident_view(store, PROJECT, seeded.prompt_culprit, now=NOW),
                render_incident,
            ),
            "confounded": (
                incident_view(store, PROJECT, seeded.clones[payloads[1].name], now=NOW),
                render_incident,
            ),
            "no-cause": (
                incident_view(store, PROJECT, seeded.clones[payloads[2].name], now=NOW),
                render_incident,
            ),
            "overview": (overview_view(store, PROJECT, now=NOW), render_overview),
            "comparison": (comparison_view(store, PROJECT, spec), render_comparison),
            "experiment": (experiment_view(store, PROJECT, x), render_experiment),
        }
        for name, (view, render) in views.items():
            bad = poison(view, everything)
            if name == "experiment":
                bad.report["arms"] = {everything: 10}
                bad.charts = {everything: NO_CHART}
                bad.api = view.api
            for mode, api_base in (("served", ""), ("exported", None)):
                files[f"{name}-{mode}"] = root / f"{name}-{mode}.html"
                html = CSP_META.sub("", render(bad, api_base=api_base))
                files[f"{name}-{mode}"].write_text(html, encoding="utf-8")
        files["login"] = root / "login.html"
        files["login"].write_text(
            CSP_META.sub("", render_login(next_url=everything, error=everything)),
            encoding="utf-8",
        )
    finally:
        store.close()
    port = free_port()
    env = env_for(
        root / "data", PROMPTBLAME_AUTH_DISABLED="true", PROMPTBLAME_DEFAULT_PROJECT=PROJECT
    )
    proc = subprocess.Popen(
        [*CLI, "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"server exited with {proc.returncode}"
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "server did not become healthy in 60 s"
            time.sleep(0.1)
        yield Site(base, seeded, beacon, files)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        beacon.close()


def served_paths(site: Site) -> list[str]:
    P = by_name(corpus(site.beacon.url))
    s = site.seeded
    clones = ("meta-refresh", "img-beacon", "huge-markup")
    script = quote(P["script"].text[:128], safe="")  # a metric name has at most 128
    return [
        "/reports/",
        f"/reports/incidents/{s.prompt_culprit}",
        f"/reports/incidents/{s.model_culprit}",
        *(f"/reports/incidents/{s.clones[n]}" for n in clones),
        f"/reports/experiments/{quote(experiment_name(P), safe='')}?metric=correct"
        f"&control={quote(ident(P[ARMS[0]]), safe='')}",
        f"/reports/compare?metric={script}&a.app={quote(P['svg-onload'].text, safe='')}",
    ]  # (the login page only shows with keys on; its hostile copy is in site.files)


def problems(v: Visit, allowed: set[str]) -> list[str]:
    out = []
    s = v.state
    if s["title"] == "pwned" or s["pwned"] is not None:
        out.append(f"a payload ran: title={s['title'][:40]!r} data-pwned={s['pwned']!r}")
    if s["location"] != v.url:
        out.append(f"the page navigated away to {s['location']}")
    if s["injected"] or s["handlers"]:
        out.append(f"{s['injected']} injected elements, {s['handlers']} event handlers")
    out += [f"console: {m[-200:]}" for m in v.console if "favicon.ico" not in m]
    out += [f"request: {u[:160]}" for u in {*v.requests, *s["resources"]} - allowed]
    return out


def test_the_harness_sees_a_payload_that_runs_or_loads(browser, site, tmp_path):
    """Positive controls: the same checks catch an unescaped payload, and the CSP's blocking of
    one shows in the console."""
    script = by_name(corpus(site.beacon.url))["script"].text
    img = by_name(corpus(site.beacon.url))["img-beacon"].text
    raw = tmp_path / "raw.html"
    raw.write_text(f"<!doctype html><title>t</title><p>{script}{img}</p>")
    v = browser.visit(raw.as_uri(), settle=0.5)
    assert v.state["title"] == "pwned" and v.state["pwned"] == "script"
    assert any(u.startswith(site.beacon.url) for u in v.requests)
    assert problems(v, {raw.as_uri()})
    deadline = time.monotonic() + 5
    while len(site.beacon.hits) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sorted(site.beacon.hits) == ["GET /beacon/img", "GET /beacon/js-script"]
    guarded = tmp_path / "csp.html"
    csp = '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'">'
    guarded.write_text(f"<!doctype html>{csp}<title>t</title><p>{script}{img}</p>")
    v = browser.visit(guarded.as_uri())
    assert v.state["pwned"] is None and any("Content Security Policy" in m for m in v.console)
    site.beacon.hits.clear()


def test_served_report_pages_full_of_payloads_run_nothing_and_load_nothing(browser, site):
    for path in served_paths(site):
        url = site.base + path
        site.served[path] = httpx.get(url, timeout=60).text  # for the test without CSP
        v = browser.visit(url)
        allowed = {url, site.base + FAVICON}
        assert problems(v, allowed) == [], (path[:120], problems(v, allowed)[:5])
        assert "promptblame" in v.state["title"]
    time.sleep(0.5)
    assert site.beacon.hits == []


def test_without_their_csp_the_pages_still_run_nothing_and_load_nothing(browser, site, tmp_path):
    """The same pages with the Content-Security-Policy taken out (header and meta), opened as
    files: only the escaping stands between the payloads and the browser. Plus a page of each
    kind with every payload in every slot at once."""
    pages = dict(site.files)
    for n, path in enumerate(served_paths(site)):
        html = site.served.get(path) or httpx.get(site.base + path, timeout=60).text
        assert CSP_META.search(html)
        pages[f"served-{n}"] = tmp_path / f"served-{n}.html"
        pages[f"served-{n}"].write_text(CSP_META.sub("", html), encoding="utf-8")
    for name, file in pages.items():
        assert "Content-Security-Policy" not in file.read_text(encoding="utf-8")
        v = browser.visit(file.as_uri())
        # relative links resolve to file:///reports/...; a page loads none of them by itself
        assert problems(v, {file.as_uri()}) == [], (name, problems(v, {file.as_uri()})[:5])
    time.sleep(0.5)
    assert site.beacon.hits == []
