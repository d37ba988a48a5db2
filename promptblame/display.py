"""Untrusted text made safe to show to a person: in HTML reports, chart labels, Slack messages
and terminal output.

Escaping (HTML autoescape, Slack's `&<>`) keeps text from becoming markup; this keeps it from
acting on the display itself. Control characters (ANSI/OSC escape sequences that clear a
terminal, retitle it, write its clipboard or hide a hyperlink; NUL; backspace; a lone carriage
return that overwrites the line) and bidirectional overrides/isolates (U+202A-U+202E,
U+2066-U+2069: "Trojan Source" text that reads differently than it is, e.g. a version name that
reorders the rest of an alert's headline) are shown as visible symbols instead of taking effect.
Tab, newline and CR LF stay. The stored data is never changed; only what is shown.
"""

from __future__ import annotations

import re

_HIDDEN = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]|\r(?!\n)")


def _symbol(m: re.Match[str]) -> str:
    code = ord(m.group())
    if code < 0x20:
        return chr(0x2400 + code)  # the Control Pictures block: ␀ ␇ ␈ ␍ ␛ ...
    if code == 0x7F:
        return "\u2421"  # ␡
    return f"[U+{code:04X}]"


def visible(text: str) -> str:
    """`text` with control characters and bidi overrides replaced by visible symbols."""
    return _HIDDEN.sub(_symbol, text) if _HIDDEN.search(text) else text
