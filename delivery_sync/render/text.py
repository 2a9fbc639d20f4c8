"""Remote text made safe for a terminal, a log line or cron mail: shown literally, control codes escaped.

A client name or an error body is data: it must not move the cursor, set a
title (OSC), ring the bell, or start a new line that looks like one of ours
(a forged `sync ok: ...`). Rich markup is not an issue here: views pass `Text`
objects, which rich never parses.
"""

from __future__ import annotations

import re

# C0 controls, DEL, C1 controls (incl. the 8-bit CSI), the line and paragraph separators some viewers
# break lines at, zero-width characters, and the bidi marks and overrides that reorder what is shown.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060\u2066-\u2069\ufeff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match) -> str:
    char = match.group()
    return _NAMED.get(char) or (f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")


def safe(text: str) -> str:
    """`text` with every control character written as an escape (`\\x1b`, `\\n`), else unchanged."""
    return _UNSAFE.sub(_escape, text)
