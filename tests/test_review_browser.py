"""The review page in a real browser (headless Chromium over DevTools): a reviewer labels ten
responses with the keyboard alone, undoes the last, answers it again, and the stored labels are
exactly what was typed; a queue of responses full of the hostile corpus stays inert (no payload
runs or loads anything; the page's one script is its own); no page scrolls sideways at 390 px."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from promptblame.api.auth import new_key
from promptblame.ingest.contracts import ResponseEvent
from promptblame.ingest.rows import responses_table
from promptblame.review import queues
from promptblame.review.config import validate
from promptblame.settings import Settings
from promptblame.store import open_store
from tests.cdp import CHROMIUM, Browser
from tests.hostile import corpus
from tests.server_process import free_port, start_server

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed")
P = "rev"
T0 = datetime(2026, 11, 20, tzinfo=UTC)
# what the reviewer types for items 1..10: a pass/fail key, then a scale step (which saves)
TYPED = [
    ("p", "4"),
    ("f", "2"),
    ("p", "5"),
    ("p", "3"),
    ("f", "1"),
    ("f", "2"),
    ("p", "4"),
    ("p", "5"),
    ("f", "3"),
    ("p", "2"),
]
REDO = ("f", "1")  # the 10th item, answered again after the undo


class Beacon(BaseHTTPRequestHandler):
    hits: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        Beacon.hits.append(self.path)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@dataclass
class Site:
    base: str
    key: str
    beacon: str


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    beacon = ThreadingHTTPServer(("127.0.0.1", 0), Beacon)
    threading.Thread(target=beacon.serve_forever, daemon=True).start()
    beacon_url = f"http://127.0.0.1:{beacon.server_address[1]}"
    data = tmp_path_factory.mktemp("review") / "data"
    store = open_store(Settings(data_dir=data))
    try:
        events = [
            ResponseEvent(
                event_id=f"kb-{i}",
                ts=T0 + timedelta(minutes=i),
                app="kb",
                model="m",
                input=f"question {i}",
                output=f"answer {i}",
            )
            for i in range(12)
        ]
        texts = [p.text for p in corpus(beacon_url)]
        for i in range(3):
            events.append(
                ResponseEvent(
                    event_id=f"evil-{i}",
                    ts=T0 + timedelta(hours=1, minutes=i),
                    app="evil",
                    model="m",
                    route=texts[i][:200],
                    prompt_version=texts[i + 3][:200],
                    input="\n".join(texts),
                    output="\n".join(reversed(texts)),
                    expected_output="\n".join(texts[::2]),
                    tags={f"t{j}": t[:500] for j, t in enumerate(texts[:20])},
                )
            )
        store.insert("responses", responses_table(P, events, datetime.now(UTC)))
        fields = [{"name": "correct", "kind": "pass_fail"}, {"name": "tone", "kind": "scale"}]
        doc = {
            "queues": [
                {"name": "kb", "filter": {"app": "kb"}, "fields": fields},
                {
                    "name": "evil",
                    "filter": {"app": "evil"},
                    "fields": fields,
                    "description": texts[0],
                    "instructions": texts[1],
                },
            ],
            "trust": [{"metric": "correct", "min_agreement": 0.6, "min_items": 5}],
        }
        queues.apply(store, P, validate(doc))
        key, record = new_key(P, ["read", "review"], name="rita")
        store.put_api_key(record)
    finally:
        store.close()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = start_server(data, port, PROMPTBLAME_PUBLIC_URL=base)
    try:
        yield Site(base, key, beacon_url)
    finally:
        proc.terminate()
        proc.wait(30)
        beacon.shutdown()


@pytest.fixture()
def browser(site: Site, tmp_path: Path) -> Iterator[Browser]:
    b = Browser(tmp_path / "profile")
    b.send("Network.enable")
    b.send("Network.setCookie", name="pb_report_key", value=site.key, url=f"{site.base}/reports/")
    try:
        yield b
    finally:
        b.close()


def press(b: Browser, key: str, *, navigates: bool) -> None:
    b.events.clear()
    code = f"Digit{key}" if key.isdigit() else f"Key{key.upper()}"
    b.send("Input.dispatchKeyEvent", type="keyDown", key=key, text=key, code=code)
    b.send("Input.dispatchKeyEvent", type="keyUp", key=key, code=code)
    if navigates:
        b._wait("Page.loadEventFired")


def shown_event(b: Browser) -> str:
    return str(b.eval("document.querySelector('input[name=event_id]').value"))


def stored(site: Site, queue: str) -> dict[str, dict[str, float]]:
    import httpx

    r = httpx.get(
        f"{site.base}/v1/queues/{queue}/labels",
        headers={"Authorization": f"Bearer {site.key}"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return {x["event_id"]: x["labels"] for x in r.json()["labels"] if x["action"] == "label"}


def test_ten_labels_by_keyboard_with_an_undo_are_stored_exactly(site, browser):
    browser.goto(f"{site.base}/reports/review/kb")
    expected: dict[str, dict[str, float]] = {}
    for i, (verdict, tone) in enumerate(TYPED):
        event_id = shown_event(browser)
        assert event_id not in expected, "a response was served twice"
        press(browser, verdict, navigates=False)
        press(browser, tone, navigates=True)
        expected[event_id] = {"correct": 1.0 if verdict == "p" else 0.0, "tone": float(tone)}
        assert browser.eval("document.getElementById('mine').textContent") == str(i + 1)
    assert stored(site, "kb") == expected
    tenth = list(expected)[-1]
    press(browser, "u", navigates=True)  # undo: the 10th item comes back
    assert shown_event(browser) == tenth
    assert tenth not in stored(site, "kb")
    press(browser, REDO[0], navigates=False)
    press(browser, REDO[1], navigates=True)
    expected[tenth] = {"correct": 0.0, "tone": 1.0}
    assert stored(site, "kb") == expected
    # the answer's page shows the reviewer's own label beside (no) evaluator scores
    assert "Your last answer" in browser.eval("document.body.innerText")


def test_hostile_text_stays_inert_on_the_review_page(site, browser):
    Beacon.hits.clear()
    for width in (1280, 390):
        browser.goto(f"{site.base}/reports/review/evil", width=width)
        state = browser.eval(
            "({title: document.title, pwned: document.documentElement.getAttribute('data-pwned'),"
            " scripts: [...document.scripts].map(s => s.src),"
            " handlers: [...document.querySelectorAll('*')].filter(e => [...e.attributes]"
            "   .some(a => a.name.startsWith('on'))).length,"
            " injected: document.querySelectorAll('img, iframe, object, embed, svg, link, base,"
            "   meta[http-equiv=refresh]').length,"
            " wide: document.documentElement.scrollWidth - window.innerWidth,"
            " output: document.getElementById('output').textContent})"
        )
        assert state["title"].startswith("Review evil") and state["pwned"] is None
        assert state["scripts"] == [f"{site.base}/reports/static/review.js"]
        assert state["handlers"] == 0 and state["injected"] == 0
        assert state["wide"] <= 0, f"scrolls sideways at {width}px"
        assert corpus(site.beacon)[0].text in state["output"]  # shown as text
    # the reviewer labels one through the keyboard: the next page is as inert
    press(browser, "p", navigates=False)
    press(browser, "3", navigates=True)
    assert browser.eval("document.documentElement.getAttribute('data-pwned')") is None
    time.sleep(0.5)  # a payload's fetch, had one run, would have landed by now
    assert Beacon.hits == []


def test_review_pages_fit_a_phone(site, browser):
    for path in ("/reports/review", "/reports/agreement", "/reports/review/kb"):
        browser.goto(f"{site.base}{path}", width=390)
        wide = browser.eval("document.documentElement.scrollWidth - window.innerWidth")
        assert wide <= 0, f"{path} scrolls sideways at 390 px"


def test_keys_do_nothing_while_typing_a_comment(site, browser):
    browser.goto(f"{site.base}/reports/review/kb")
    before = shown_event(browser)
    press(browser, "c", navigates=False)  # focus the comment box
    for k in "pf4":
        press(browser, k, navigates=False)
    assert browser.eval("document.querySelector('textarea').value") == "pf4"
    assert shown_event(browser) == before
    assert json.dumps(browser.eval("[...document.querySelectorAll('input:checked')].length")) == "0"
