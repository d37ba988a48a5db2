"""Shared by the fuzz tests: the hypothesis profile and the tallies they print.

Deterministic on CI: `derandomize=True` (examples come from a fixed seed derived from each test),
no example database, no deadline (a 2-core machine shared with other jobs has slow moments).
`PROMPTBLAME_FUZZ_SCALE=10` multiplies the example counts for a longer local run.
"""

from __future__ import annotations

import base64
import collections
import copy
import dataclasses
import json
import os
import sys
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

SCALE = max(1, int(os.environ.get("PROMPTBLAME_FUZZ_SCALE", "1")))

settings.register_profile(
    "promptblame-fuzz",
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,
    ],
)
PROFILE = settings.get_profile("promptblame-fuzz")


def examples(n: int) -> settings:
    """The profile with `n` examples per test (times PROMPTBLAME_FUZZ_SCALE)."""
    return settings(PROFILE, max_examples=n * SCALE)


class Tally:
    """How many requests/examples each test generated, printed when the module finishes."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.counts: collections.Counter[str] = collections.Counter()

    def add(self, what: str, n: int = 1) -> None:
        self.counts[what] += n

    def report(self, config: pytest.Config) -> None:
        """One line per group ("<group>: <what>" or "<group>  <operation>") with its total."""
        groups: dict[str, list[int]] = {}
        for what, n in self.counts.items():
            group = what.split(":")[0] if ":" in what else what[:14].strip()
            groups.setdefault(group, []).append(n)
        total = sum(self.counts.values())
        lines = [f"{self.title}: {total} examples/requests generated"]
        lines += [
            f"  {sum(ns):6d}  {group}" + (f" ({len(ns)} kinds/operations)" if len(ns) > 1 else "")
            for group, ns in sorted(groups.items())
        ]
        capture = config.pluginmanager.get_plugin("capturemanager")
        if capture is not None:
            with capture.global_and_fixture_disabled():
                print("\n" + "\n".join(lines), file=sys.stderr)


# --- hostile JSON: bodies a parser could read two ways -----------------------------------------
#
# Shared by the decoder, API and schemathesis fuzzing. A document is built as Python values,
# then serialized with one ambiguity put in at a chosen place: a key repeated in an object at
# any depth, or, inside any string (an object key or a value), bytes that are not UTF-8 or a
# lone surrogate escape. `Hostile.path` says where, so a test knows which field must be named.

# raw bytes that are not UTF-8, and JSON escapes of lone surrogates
BAD_TEXT = [
    b"\xff",
    b"\xfe",
    b"\x80",
    b"\xc0\x80",
    b"\xed\xa0\x80",
    b"\xf8\x88\x80\x80\x80",
    b"\\udc80",
    b"\\ud800",
    b"\\udfff",
    b"\\ud83d x",
]
_MARK = "\ue000\ue001"  # private-use characters no generated text holds
_MARK_BYTES = _MARK.encode()

Path = tuple[str | int, ...]


@dataclasses.dataclass(frozen=True)
class Hostile:
    body: bytes
    kind: str  # "repeated key" | "bad text" | "bad key"
    path: Path  # the repeated key's path, or the string's (for a key: the key's path)


def dict_paths(doc: Any, path: Path = ()) -> list[Path]:
    """Paths of every object in `doc`, outermost first."""
    out: list[Path] = []
    if isinstance(doc, dict):
        out.append(path)
        for k, v in doc.items():
            out += dict_paths(v, (*path, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += dict_paths(v, (*path, i))
    return out


def string_paths(doc: Any, path: Path = ()) -> list[tuple[Path, bool]]:
    """(path, is_key) of every string in `doc`: object keys and string values."""
    out: list[tuple[Path, bool]] = []
    if isinstance(doc, str):
        out.append((path, False))
    elif isinstance(doc, dict):
        for k, v in doc.items():
            out.append(((*path, k), True))
            out += string_paths(v, (*path, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += string_paths(v, (*path, i))
    return out


def dumps_repeating(doc: Any, at: Path, key: str) -> bytes:
    """JSON of `doc` in which the object at `at` holds `key` once more after its own keys (with
    another value than it has, so the two readings differ)."""

    def dump(v: Any, path: Path) -> str:
        if isinstance(v, dict):
            items = [f"{json.dumps(k)}: {dump(x, (*path, k))}" for k, x in v.items()]
            if path == at:
                if key not in v:
                    items.append(f"{json.dumps(key)}: 1")
                items.append(f"{json.dumps(key)}: {json.dumps(['repeated', str(v.get(key))])}")
            return "{" + ", ".join(items) + "}"
        if isinstance(v, list):
            return "[" + ", ".join(dump(x, (*path, i)) for i, x in enumerate(v)) + "]"
        return json.dumps(v, ensure_ascii=False)

    return dump(doc, ()).encode()


def with_bad_text(doc: Any, at: Path, is_key: bool, bad: bytes, offset: int) -> bytes:
    """JSON of `doc` with `bad` inserted at `offset` into the string at `at` (a key if
    `is_key`)."""
    doc = copy.deepcopy(doc)
    parent = doc
    for p in at[:-1]:
        parent = parent[p]
    last = at[-1]
    if is_key:
        assert isinstance(last, str)
        i = min(offset, len(last))
        items = list(parent.items())
        parent.clear()
        parent.update({(k[:i] + _MARK + k[i:] if k == last else k): v for k, v in items})
    else:
        s = parent[last]
        i = min(offset, len(s))
        parent[last] = s[:i] + _MARK + s[i:]
    raw = json.dumps(doc, ensure_ascii=False).encode()
    assert raw.count(_MARK_BYTES) == 1
    return raw.replace(_MARK_BYTES, bad)


@st.composite
def hostile_json(draw: st.DrawFn, doc: Any, within: Path = ()) -> Hostile:
    """`doc` serialized with one ambiguity somewhere under `within`: a repeated key in any
    object, or bad bytes in any key or string value."""
    objects = [p for p in dict_paths(doc) if p[: len(within)] == within]
    strings = [(p, k) for p, k in string_paths(doc) if p[: len(within)] == within]
    kinds = (["repeated key"] if objects else []) + (["bad text"] if strings else [])
    kind = draw(st.sampled_from(kinds))
    if kind == "repeated key":
        at = draw(st.sampled_from(objects))
        node = doc
        for p in at:
            node = node[p]
        key = draw(st.sampled_from(sorted(node)) if node else st.just("k"))
        return Hostile(dumps_repeating(doc, at, key), kind, (*at, key))
    path, is_key = draw(st.sampled_from(strings))
    bad = draw(st.sampled_from(BAD_TEXT))
    body = with_bad_text(doc, path, is_key, bad, draw(st.integers(0, 8)))
    return Hostile(body, "bad key" if is_key else kind, path)


# opaque tokens: what a client may forge in place of a cursor or an id
EXTREME_INTS = st.one_of(
    st.sampled_from(
        [
            0,
            -1,
            2**31,
            2**63 - 1,
            2**63,
            -(2**63),
            2**64,
            10**20,
            -(10**20),
            253402300800000,  # year 10000 in ms
            -62135596800001,  # before year 1 in ms
            10413792000000,  # year 2300
            -2208988800001,  # before 1900
        ]
    ),
    st.integers(-(10**30), 10**30),
)
GARBAGE = st.one_of(
    st.text(max_size=40),
    st.binary(max_size=30).map(lambda b: b.decode("latin-1")),
    st.sampled_from(["", ":", "::", "=", "====", "%FF", "\x00", "9" * 400, "-", "1e309", "NaN"]),
)
DATES = st.one_of(
    st.sampled_from(
        [
            "0001-01-01T00:00:00+14:00",
            "9999-12-31T23:59:59-14:00",
            "1899-12-31T23:59:59Z",
            "2300-01-01T00:00:00Z",
            "10000-01-01",
            "-0001-01-01",
            "2026-02-30",
            "2026-12-06T25:00:00Z",
        ]
    ),
    st.datetimes().map(lambda d: d.isoformat()),
    EXTREME_INTS.map(str),
)


def cursor_of(ms: int, event_id: str) -> str:
    return base64.urlsafe_b64encode(f"{ms}:{event_id}".encode()).decode()


CURSORS = st.one_of(
    st.builds(
        cursor_of, EXTREME_INTS, GARBAGE.map(lambda s: s.encode("utf-8", "replace").decode())
    ),
    DATES.map(lambda d: base64.urlsafe_b64encode(f"{d}:x".encode()).decode()),
    st.binary(max_size=40).map(lambda b: base64.urlsafe_b64encode(b).decode()),
    GARBAGE,
)
