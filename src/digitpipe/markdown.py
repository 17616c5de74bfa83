"""User text (class names, titles) shown literally in the Markdown reports."""

from __future__ import annotations

import re

# CommonMark lets a backslash escape any ASCII punctuation; these start inline markup (code,
# links, HTML, entities, emphasis, strikethrough), end a table cell or close a heading; "_" only
# where it is not inside a word (snake_case stays readable; there it never starts emphasis).
MARKUP = re.compile(r"([\\`*\[\]<>|&~#]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9]))")


def literal(text: str) -> str:
    """``text`` escaped so that Markdown renders it as written, inside a table cell too."""
    return MARKUP.sub(r"\\\1", text)
