"""JSON as the API reads it: one meaning per body, or a refusal that says where.

Two things make a JSON text ambiguous, and both used to be resolved silently: a key repeated
in one object (`{"responses": [...], "responses": []}` — parsers keep the last value, so an
acknowledged batch stored nothing), and text that is not Unicode (raw invalid UTF-8, a lone
surrogate escape such as `"\\udc80"`), which can only be stored after rewriting it — so two
different identifiers could become one. Every JSON body the API takes goes through here.

The fast path is jiter (Rust; repeated keys and invalid Unicode are errors there), so a clean
body costs one parse. Only a refused body is read again, by the standard library with invalid
bytes kept as surrogates (`surrogateescape`) and repeated keys recorded, to say where each
problem is: `read_marked` + `problems`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import jiter

from promptblame.errors import MalformedBody


class Repeated(dict[str, Any]):
    """An object in which some key appeared more than once (the last value kept)."""

    repeated: list[str]


@dataclass(frozen=True)
class Problem:
    """Something in a document that has no single meaning: `path` is the dotted location."""

    path: tuple[str | int, ...]
    kind: str  # REPEATED | NOT_UNICODE | KEY_NOT_UNICODE
    text: str = ""

    def field(self, strip: int = 0) -> str:
        return ".".join(shown(p) for p in self.path[strip:]) or "(body)"

    def message(self) -> str:
        if self.kind == REPEATED:
            return (
                f"the key {self.path[-1]!r} appears more than once in this object;"
                " which value is meant is ambiguous: send each key once"
            )
        what = "this key" if self.kind == KEY_NOT_UNICODE else "the text"
        cut = self.text[:80] + ("…" if len(self.text) > 80 else "")
        return (  # repr: a lone surrogate shows as the escape \udcXX, never raw
            f"{what} {cut!r} is not valid Unicode (invalid UTF-8 bytes or a lone"
            " surrogate escape); names and identifiers are stored exactly as sent, so it"
            " cannot be repaired"
        )


REPEATED = "repeated key"
NOT_UNICODE = "not unicode"
KEY_NOT_UNICODE = "key not unicode"
_SURROGATE = re.compile("[\ud800-\udfff]")  # json.loads has already joined valid pairs
_BOM = b"\xef\xbb\xbf"
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def shown(part: str | int) -> str:
    """A path part or text safe to print and to send as UTF-8 (lone surrogates as \\udcXX)."""
    return str(part).encode("utf-8", "backslashreplace").decode("utf-8")


def has_surrogate(text: str) -> bool:
    return _SURROGATE.search(text) is not None


def replace_surrogates(text: str) -> str:
    """Free text only: what cannot be stored as UTF-8 becomes U+FFFD, as browsers do."""
    return _SURROGATE.sub("\ufffd", text)


def loads(body: bytes) -> Any:
    """The document, or MalformedBody naming the first repeated key or non-Unicode text by
    its dotted path. A syntax error in UTF-8 text is raised as json.JSONDecodeError (FastAPI
    answers it with its usual 422 naming the position). A leading UTF-8 byte order mark is
    ignored, as RFC 8259 allows (FastAPI's reader did too)."""
    if body.startswith(_BOM):
        body = body[len(_BOM) :]
    try:
        return jiter.from_json(body, catch_duplicate_keys=True)
    except ValueError:
        pass
    doc, marks = read_marked(body)
    first = next(problems(doc, marks), None)
    if first is not None:
        where = "" if not first.path else f" at {first.field()}"
        raise MalformedBody(f"the body is ambiguous JSON{where}: {first.message()}")
    return doc  # accepted by json but not by jiter (e.g. nested deeper than jiter goes)


@dataclass
class Marks:
    """What `read_marked` saw: whether any object repeated a key, any text was not Unicode."""

    repeated: bool
    maybe_not_unicode: bool


def read_marked(body: bytes) -> tuple[Any, Marks]:
    """Parse leniently, keeping every ambiguity visible: invalid UTF-8 bytes become lone
    surrogates, objects with a repeated key are `Repeated` dicts. Syntax errors: a
    json.JSONDecodeError for UTF-8 text, MalformedBody for anything else."""
    marks = Marks(repeated=False, maybe_not_unicode=False)

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        d = dict(items)
        if len(d) == len(items):
            return d
        marks.repeated = True
        out = Repeated(d)
        seen: set[str] = set()
        out.repeated = []
        for k, _ in items:
            if k in seen and k not in out.repeated:
                out.repeated.append(k)
            seen.add(k)
        return out

    bad: UnicodeDecodeError | None = None
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        text, bad = body.decode("utf-8", "surrogateescape"), exc
    marks.maybe_not_unicode = bad is not None or _SURROGATE_ESCAPE.search(body) is not None
    try:
        return json.loads(text, object_pairs_hook=pairs), marks
    except RecursionError:
        raise MalformedBody("the body is not valid JSON: nested too deeply") from None
    except json.JSONDecodeError:
        if bad is None:
            raise
        raise MalformedBody(f"the body is not JSON in UTF-8: {bad}") from None


def problems(
    doc: Any, marks: Marks, *, free_text: frozenset[str] = frozenset()
) -> Iterator[Problem]:
    """Every repeated key and every non-Unicode key or text of `doc`, in document order.

    Strings under a key in `free_text` (of the document's top object) are not problems: the
    caller replaces their surrogates. Iterative, so any depth json accepted is walked."""
    if not (marks.repeated or marks.maybe_not_unicode):
        return
    check_text = marks.maybe_not_unicode
    stack: list[tuple[tuple[str | int, ...], Any]] = [((), doc)]
    while stack:
        path, v = stack.pop()
        if isinstance(v, str):
            if check_text and has_surrogate(v):
                yield Problem(path, NOT_UNICODE, v)
        elif isinstance(v, dict):
            if isinstance(v, Repeated):
                for k in v.repeated:
                    yield Problem((*path, k), REPEATED)
            children = []
            for k, x in v.items():
                if check_text and has_surrogate(k):
                    yield Problem((*path, k), KEY_NOT_UNICODE, k)
                elif not (len(path) == 0 and k in free_text and isinstance(x, str)):
                    children.append(((*path, k), x))
            stack.extend(reversed(children))
        elif isinstance(v, list):
            stack.extend(reversed([((*path, i), x) for i, x in enumerate(v)]))
