"""A corpus of hostile text: what an LLM, a prompt author or a careless app may put in any field.

Every payload that could act does something visible if it ever runs or loads: scripts set the
document title to "pwned", mark <html data-pwned> and fetch the beacon; markup that loads
(img, iframe, link, meta refresh, CSS url()) points at the beacon. Tests place the payloads in
every text field and check every surface (HTML pages, exported files, alert payloads, CLI output)
shows them as inert text, and that the store hands them back byte for byte.

`corpus(beacon)` gives the payloads with the beacon URL filled in (a local listener in the
browser test; an unroutable address elsewhere). `SHORT` payloads fit identifier fields (app,
model, versions: at most 256 characters); the rest only fit free text (input, output, prompt
templates, notes).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

NOWHERE = "http://127.0.0.1:9/beacon"  # the discard port: nothing listens


@dataclass(frozen=True)
class Payload:
    name: str
    kind: str  # xss | template | sql | csv | ansi | unicode | slack
    text: str

    @property
    def short(self) -> bool:
        return 0 < len(self.text) <= 256


def _js(n: str, beacon: str) -> str:
    """What a payload does if it runs: visible in the DOM and in the beacon's log."""
    return (
        f"document.title='pwned';document.documentElement.setAttribute('data-pwned','{n}');"
        f"fetch('{beacon}/js-{n}')"
    )


ZALGO = "Z" + "\u0335\u0321\u0322\u031b\u0324\u031f\u031e\u0348\u0323" * 12 + "algo"


def corpus(beacon: str = NOWHERE) -> list[Payload]:
    b = beacon.rstrip("/")
    xss = [
        ("script", f"<script>{_js('script', b)}</script>"),
        ("img-onerror", f'<img src=x onerror="{_js("img", b)}">'),
        ("img-beacon", f"<img src={b}/img>"),
        ("javascript-url", f"javascript:{_js('jsurl', b)}//"),
        ("a-javascript", f'<a href="javascript:{_js("a", b)}">click</a>'),
        ("svg-onload", f'<svg onload="{_js("svg", b)}"><circle r=1 /></svg>'),
        ("svg-text-breakout", f"</text></svg><script>{_js('svgtext', b)}</script><svg><text>"),
        ("attr-breakout-double", f'"><img src=x onerror="{_js("attr2", b)}">'),
        ("attr-breakout-single", f"'><script>{_js('attr1', b)}</script>"),
        ("attr-unquoted", f" autofocus onfocus={_js('focus', b)} x="),
        ("style-breakout", f"</style><script>{_js('style', b)}</script>"),
        ("pre-breakout", f"</pre></div><iframe src={b}/iframe></iframe>"),
        ("title-breakout", f"</title><script>{_js('title', b)}</script>"),
        ("meta-refresh", f'<meta http-equiv="refresh" content="0;url={b}/refresh">'),
        ("css-import", f"<style>@import url({b}/css);</style>"),
        ("link-stylesheet", f'<link rel="stylesheet" href="{b}/link">'),
        ("base-href", f'<base href="{b}/base/">'),
        ("form-action", f'<form action="{b}/form"><button>go</button></form>'),
        ("html-comment", f"<!--<script>{_js('comment', b)}</script>-->"),
        ("entity-encoded", "&lt;script&gt;alert(1)&lt;/script&gt; &amp;amp; &#60;b&#62;"),
        ("cdata", f"<![CDATA[<script>{_js('cdata', b)}</script>]]>"),
    ]
    template = [
        ("jinja-expr", "{{7*7}} {{ 7*'7' }}"),
        ("jinja-stmt", "{% for x in range(3) %}X{% endfor %}{# c #}"),
        ("jinja-ssti", "{{ cycler.__init__.__globals__.os.popen('id').read() }}"),
        ("js-template", "${7*7} #{7*7} <%= 7*7 %> @(7*7)"),
        ("python-format", "{0.__class__.__mro__} {policy} %s %d %(x)s %n"),
        ("angular", "{{constructor.constructor('document.title=\"pwned\"')()}}"),
    ]
    sql = [
        ("sql-or", "' OR 1=1 --"),
        ("sql-drop", "'); DROP TABLE responses; --"),
        ("sql-union", "x' UNION ALL SELECT input, output FROM responses --"),
        ("sql-backslash", "\\'; SELECT 1; -- \\\\ \\N \\t \\0"),
        ("clickhouse-param", "{p:String} {project_id:String}"),
        ("sql-whitespace", "a\tb\nc\rd"),
    ]
    csv = [
        ("csv-hyperlink", f'=HYPERLINK("{b}/csv","click")'),
        ("csv-cmd", "+cmd|' /C calc'!A0"),
        ("csv-sum", "@SUM(1+1)*cmd|' /C calc'!A0"),
        ("csv-minus", "-2+3+cmd|' /C calc'!A0"),
        ("csv-tab", "\t=1+1"),
    ]
    ansi = [
        ("ansi-clear", "\x1b[2J\x1b[H\x1b[31mRED\x1b[0m"),
        ("ansi-hyperlink", f"\x1b]8;;{b}/osc8\x1b\\click me\x1b]8;;\x1b\\"),
        ("ansi-osc52", "\x1b]52;c;cHduZWQ=\x07"),
        ("ansi-title", "\x1b]0;pwned\x07"),
        ("c1-csi", "\x9b2J\x9b31mC1"),
        ("carriage-return", "all good\rFAILED  "),
        ("backspace-bell", "ok\x08\x08\x08no\x07"),
    ]
    unicode = [
        ("rtl-override", "v2\u202e1v\u202c evil"),
        ("bidi-isolates", "\u2067abc\u2066def\u2069"),
        ("zalgo", ZALGO),
        ("astral", "𝕳𝖊𝖑𝖑𝖔 😈 𐍈 \U0010fffd"),
        ("nul", "a\x00b\x00"),
        ("bom-zero-width", "\ufeffzero\u200bwidth\u200d"),
        ("line-separators", "a\u2028b\u2029c\x85d"),
        ("noncharacters", "\ufffe\uffff\ufdd0"),
        ("huge", "A" * 100_000),
        ("huge-markup", "<b>" * 20_000),
    ]
    slack = [
        ("slack-channel", "<!channel> <!here> <!everyone>"),
        ("slack-mention", "<@U024BE7LH> <#C024BE7LR>"),
        ("slack-link", f"<{b}/slack|click here> <mailto:x@example.com|mail>"),
        ("slack-format", "*bold* _it_ ~strike~ `code` ```block``` > quote"),
        ("slack-escaped", "&lt;!channel&gt; &amp;"),
    ]
    out = []
    for kind, items in (
        ("xss", xss),
        ("template", template),
        ("sql", sql),
        ("csv", csv),
        ("ansi", ansi),
        ("unicode", unicode),
        ("slack", slack),
    ):
        out += [Payload(name, kind, text) for name, text in items]
    return out


# C0 and C1 control characters other than tab, newline and carriage return, and DEL.
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
BIDI = re.compile("[\u202a-\u202e\u2066-\u2069]")


def by_name(payloads: list[Payload]) -> dict[str, Payload]:
    return {p.name: p for p in payloads}


def ident(p: Payload, suffix: str = "") -> str:
    """The payload cut to fit an identifier field (at most 256 characters, never empty)."""
    return (p.text[: 256 - len(suffix)] or "-") + suffix


# -- showing text inertly -------------------------------------------------------------------


def shown(text: str) -> str:
    """How a report shows `text`: control characters and bidi overrides as visible symbols."""
    from promptblame.display import visible

    return visible(text)


# Tags the report templates and matplotlib's SVG use; anything else on a page was injected.
PAGE_TAGS = {
    *("html", "head", "meta", "title", "style", "body", "header", "main", "footer", "section"),
    *("div", "span", "a", "p", "b", "code", "pre", "h1", "h2", "h3", "h4", "ul", "li"),
    *("table", "thead", "tbody", "tr", "th", "td", "form", "button", "input", "label"),
    *("svg", "defs", "g", "path", "clippath", "use", "text", "rect", "polyline", "line"),
    *("polygon", "circle", "desc", "tspan"),
    *("nav", "select", "option", "datalist", "br"),  # navigation, filter forms, timelines
}
_META = {
    ("charset",),
    ("content", "name"),
    ("content", "http-equiv"),
}
_URL_ATTRS = {"href", "src", "action", "xlink:href", "formaction", "srcset", "poster", "data"}
_SAFE_URL = re.compile(r"^(/(?!/)[^\s\\]*|#[\w-]*|[\w.-]+\.html)$")


@dataclass
class PageCheck:
    tags: dict[str, int]
    problems: list[str]
    text: str
    title: str


def check_html(html: str) -> PageCheck:
    """Every element and attribute on the page, against what our templates can produce, and
    the page's text as a browser shows it (entities decoded)."""
    from html.parser import HTMLParser

    problems: list[str] = []
    tags: dict[str, int] = {}
    text: list[str] = []
    title: list[str] = []
    stack: list[str] = []

    class Walk(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            tags[tag] = tags.get(tag, 0) + 1
            if tag not in PAGE_TAGS:
                problems.append(f"<{tag}> {attrs}")
            names = tuple(sorted(k for k, _ in attrs))
            if tag == "meta" and names not in _META:
                problems.append(f"<meta {attrs}>")
            if tag == "meta" and (dict(attrs).get("http-equiv") or "").lower() not in (
                "",
                "content-security-policy",
            ):
                problems.append(f"<meta {attrs}>")
            for k, v in attrs:
                v = v or ""
                if k.startswith("on"):
                    problems.append(f"<{tag} {k}=...> event handler")
                if k in _URL_ATTRS and not _SAFE_URL.match(v):
                    problems.append(f"<{tag} {k}={v!r}> URL")
                if k == "style" and re.search(r"url\((?!#)|expression\(", v):
                    problems.append(f"<{tag} style={v[:80]!r}> loads something")
            if tag not in ("meta", "input", "path", "use", "rect", "polyline", "line", "circle"):
                stack.append(tag)

        def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            self.handle_starttag(tag, attrs)
            if stack and stack[-1] == tag:
                stack.pop()

        def handle_endtag(self, tag: str) -> None:
            if tag in stack:
                while stack.pop() != tag:
                    pass

        def handle_data(self, data: str) -> None:
            if stack and stack[-1] == "style":
                if "@import" in data or re.search(r"url\((?!#)", data):
                    problems.append(f"style loads something: {data[:80]!r}")
                return
            if stack and stack[-1] == "title":
                title.append(data)
            text.append(data)

        def handle_comment(self, data: str) -> None:
            problems.append(f"comment <!--{data[:60]}-->")

        def handle_decl(self, decl: str) -> None:
            if decl.lower() != "doctype html":
                problems.append(f"declaration <!{decl[:60]}>")

        def unknown_decl(self, data: str) -> None:
            problems.append(f"declaration <![{data[:60]}>")

        def handle_pi(self, data: str) -> None:
            problems.append(f"processing instruction <?{data[:60]}>")

    w = Walk(convert_charrefs=True)
    w.feed(html)
    w.close()
    if tags.get("style", 0) > 1 + tags.get("svg", 0):
        problems.append(f"{tags['style']} <style> elements for {tags.get('svg', 0)} charts")
    return PageCheck(tags, problems, "".join(text), "".join(title))


# -- a project full of hostile text ---------------------------------------------------------


@dataclass(frozen=True)
class Seeded:
    project: str
    prompt_culprit: str  # incident ids of the two detected incidents
    model_culprit: str
    clones: dict[str, str]  # payload name -> incident id carrying it in every field
    names: dict[str, str]  # slot -> payload name used by the detected incidents


# Which payloads name the apps, routes, prompts and models of the detected incidents.
SLOTS_A = {
    "app": "script",
    "route": "attr-breakout-double",
    "route2": "rtl-override",
    "environment": "csv-hyperlink",
    "prompt_id": "jinja-expr",
    "v1": "sql-or",
    "v2": "ansi-clear",
    "model": "slack-link",
}
SLOTS_B = {
    "app": "img-onerror",
    "route": "nul",
    "route2": "carriage-return",
    "environment": "sql-drop",
    "prompt_id": "python-format",
    "v1": "clickhouse-param",
    "model": "svg-onload",
    "mv1": "attr-breakout-single",
    "mv2": "ansi-hyperlink",
}

ARMS = ("csv-cmd", "bidi-isolates")  # control arm first


def experiment_name(P: dict[str, Payload]) -> str:
    return ident(P["jinja-stmt"])


def _traffic(store: Any, project: str, names: dict[str, str], *, seed: int, by: str) -> None:
    """Like tests.test_incidents.traffic, named by payloads: 10 days, ~60 responses an hour on
    two routes; at SWITCH the prompt (by="prompt") or the model version (by="model") changes
    and the pass rate of `correct` drops from 0.9 to 0.7."""
    import numpy as np

    from promptblame.ingest.contracts import ResponseEvent, ScoreEvent
    from promptblame.ingest.rows import responses_table, scores_table
    from tests.test_incidents import END, START, SWITCH

    rng = np.random.default_rng(seed)
    events, scores = [], []
    t, i = START, 0
    while t < END:
        for _ in range(int(rng.poisson(60))):
            ts = t + timedelta(seconds=float(rng.uniform(0, 3600)))
            new = ts >= SWITCH
            eid = f"{by}-{i}"
            events.append(
                ResponseEvent(
                    event_id=eid,
                    ts=ts,
                    app=names["app"],
                    model=names["model"],
                    route=names["route"] if rng.random() < 0.6 else names["route2"],
                    environment=names["environment"],
                    prompt_id=names["prompt_id"],
                    prompt_version=names["v2" if by == "prompt" and new else "v1"],
                    model_version=names[("mv2" if new else "mv1")] if by == "model" else "",
                )
            )
            p = 0.7 if new else 0.9
            scores.append(ScoreEvent(event_id=eid, name="correct", value=float(rng.random() < p)))
            i += 1
        t += timedelta(hours=1)
    now = datetime.now(UTC)
    store.insert("responses", responses_table(project, events, now))
    store.insert("scores", scores_table(project, scores, now))


def seed(
    store: Any, project: str, payloads: list[Payload], hook_url: str, sent: list[Any]
) -> Seeded:
    """Two detected incidents whose apps, routes, prompts and models are payloads; the prompt
    registry holding every payload in its templates; for each payload an incident carrying it
    in every text field with before/after responses whose input and output are the payload;
    alerts for all of them to a webhook and a Slack channel at `hook_url` (the messages are
    appended to `sent` as (url, payload) instead of being posted, which would cost a TLS
    context per message), and an alert whose delivery error is hostile text."""
    import hashlib
    import json

    from promptblame.analysis.alerting.catalog import apply as apply_alerts
    from promptblame.analysis.alerting.delivery import Delivery
    from promptblame.analysis.alerting.job import run_alerts
    from promptblame.analysis.alerting.rules import validate as validate_alerts
    from promptblame.analysis.detection import run_detection
    from promptblame.ingest.contracts import ResponseEvent, ScoreEvent
    from promptblame.ingest.rows import responses_table, scores_table
    from tests.test_incidents import NOW, SETTINGS, START, SWITCH

    P = by_name(payloads)
    a = {k: ident(P[v]) for k, v in SLOTS_A.items()}
    b = {k: ident(P[v]) for k, v in SLOTS_B.items()}
    _traffic(store, project, a, seed=1, by="prompt")
    _traffic(store, project, b, seed=2, by="model")
    # The registry: both templates of the culprit prompt hold every payload, one per line.
    lines = [p.text.replace("\n", " ").replace("\r", " ") for p in payloads]
    for version, template in (
        (a["v1"], "\n".join(["Answer {question}", *lines])),
        (a["v2"], "\n".join(["Answer {question} briefly", *reversed(lines)])),
    ):
        store.put_prompt_version(
            project,
            prompt_id=a["prompt_id"],
            version=version,
            template=template,
            content_hash=hashlib.sha256(template.encode()).hexdigest(),
            author=ident(P["attr-unquoted"]),
            labels=[ident(P["title-breakout"])],
            created_at=START,
        )
    # An A/B experiment whose name and arms are payloads.
    exp = [
        ResponseEvent(
            event_id=f"x{i}",
            ts=START + timedelta(minutes=i),
            app=a["app"],
            model=a["model"],
            experiment=experiment_name(P),
            variant=ident(P[ARMS[i % 2]]),
        )
        for i in range(400)
    ]
    verdicts = [
        ScoreEvent(event_id=e.event_id, name="correct", value=i % 3 > 0) for i, e in enumerate(exp)
    ]
    store.insert("responses", responses_table(project, exp, datetime.now(UTC)))
    store.insert("scores", scores_table(project, verdicts, datetime.now(UTC)))
    store.materialize_scores()
    run_detection(store, SETTINGS, now=NOW)
    found = {i["culprit"]: i for i in store.incidents(project) if i["verdict"] == "culprit"}
    prompt_inc = found[f"prompt {a['prompt_id']}@{a['v2']}"]
    model_inc = found[f"model {b['model']}@{b['mv2']}"]

    # One incident per payload, cloned from the prompt incident with the payload everywhere.
    base = dict(prompt_inc)
    ev0 = json.loads(base.pop("evidence"))
    clones: dict[str, str] = {}
    rows, events = [], []
    for n, p in enumerate(payloads):
        short = ident(p)
        value = f"{a['prompt_id']}@{short}"
        ev = json.loads(json.dumps(ev0))
        kind = ("culprit", "confounded", "no_version_cause")[n % 3]
        c = {**ev["culprit"], "value": value, "note": p.text, "scope_route": short}
        other = {**c, "dimension": "model", "value": short, "predecessor": short}
        ev.update(kind=kind, summary=p.text)
        if kind == "culprit":
            ev["candidates"] = [c, {**other, "status": "not_significant"}]
            culprit = f"prompt {value}"
        elif kind == "confounded":
            c["status"] = other["status"] = "not_separable"
            ev.update(culprit=None, candidates=[c, other], to_separate=p.text)
            ev["joint"] = {**c, "dimension": "prompt+model", "value": f"{value} + {short}"}
            culprit = f"prompt {value} + model {short}"
        else:
            ev.update(culprit=None, candidates=[c], cause="traffic_mix")
            for s in ev["decomposition"]["segments"]:
                s.update(route=short, environment=short)
            culprit = ""
        iid = f"h{n:03d}"
        clones[p.name] = iid
        rows.append(
            {
                **base,
                "project_id": project,
                "incident_id": iid,
                "app": short,
                "route": "",
                "environment": short,
                "verdict": kind,
                "culprit": culprit,
                "summary": p.text,
                "evidence": json.dumps(ev),
                "status_note": p.text[:2000],
            }
        )
        for side, version, ts in (
            ("b", a["v1"], SWITCH - timedelta(minutes=30)),
            ("a", short, SWITCH + timedelta(minutes=30)),
        ):
            events.append(
                ResponseEvent(
                    event_id=ident(p, f"-{side}"),
                    ts=ts + timedelta(seconds=n),
                    app=short,
                    route=short,
                    environment=short,
                    model=a["model"],
                    prompt_id=a["prompt_id"],
                    prompt_version=version,
                    case_id=short,
                    input=p.text,
                    output=p.text,
                    expected_output=p.text,
                    tags={short: p.text[:4096]},
                )
            )
    store.insert_rows("incidents", rows)
    store.insert("responses", responses_table(project, events, datetime.now(UTC)))

    config = validate_alerts(
        {
            "channels": [
                {"name": "hook", "kind": "webhook", "url": hook_url},
                {"name": "slack", "kind": "slack", "url": hook_url + "/slack"},
            ],
            "rules": [{"name": "all", "channels": ["hook", "slack"], "direction": "any"}],
        }
    )
    apply_alerts(store, project, config)

    def post(url: str, payload: dict[str, Any], **_: Any) -> Delivery:
        sent.append((url, payload))
        return Delivery(True, 1)

    run_alerts(store, SETTINGS, project_id=project, now=NOW, poster=post)
    # A receiver's error answer is recorded and shown: it is hostile text too.
    error = "HTTP 400: " + "".join(P[n].text for n in ("svg-text-breakout", "ansi-osc52", "nul"))
    store.insert_rows(
        "alerts",
        [
            {
                "project_id": project,
                "incident_id": str(prompt_inc["incident_id"]),
                "rule": "all",
                "channel": "hook",
                "event": "updated",
                "revision": 1,
                "status": "failed",
                "attempts": 4,
                "error": error,
                "text": P["slack-channel"].text,
                "sent_at": NOW,
            }
        ],
    )
    return Seeded(
        project=project,
        prompt_culprit=str(prompt_inc["incident_id"]),
        model_culprit=str(model_inc["incident_id"]),
        clones=clones,
        names={
            **{f"a.{k}": v for k, v in SLOTS_A.items()},
            **{f"b.{k}": v for k, v in SLOTS_B.items()},
        },
    )
