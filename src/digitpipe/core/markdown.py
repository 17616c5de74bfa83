"""User text (class names, titles) shown literally in the Markdown reports."""

from __future__ import annotations

import re

# CommonMark lets a backslash escape any ASCII punctuation; these start inline markup (code,
# links, HTML, entities, emphasis) or end a table cell. Not "_": snake_case names stay readable
# in the raw Markdown, and an underscore inside a word never starts emphasis.
MARKUP = re.compile(r"([\\`*\[\]<>|&])")


def literal(text: str) -> str:
    """``text`` escaped so that Markdown renders it as written, inside a table cell too."""
    return MARKUP.sub(r"\\\1", text)
