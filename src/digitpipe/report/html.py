"""Render the Markdown report as one self-contained HTML page (images inlined)."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

from markdown_it import MarkdownIt

from digitpipe.core.files import read_bounded, rerun

MAX_PICTURE_BYTES = 64 * 2**20  # the report's pictures are a few hundred KB each

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2rem auto; padding: 0 1rem;
       color: #1f2328; line-height: 1.5; }
img { max-width: 100%; display: block; margin: 1rem 0; }
table { border-collapse: collapse; margin: 1rem 0; font-size: 0.85rem; display: block;
        overflow-x: auto; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #d0d7de; padding: 0.2rem 0.35rem; text-align: left; }
th { vertical-align: bottom; }
tr:nth-child(even) { background: #f6f8fa; }
h1, h2 { border-bottom: 1px solid #d0d7de; padding-bottom: 0.3rem; }
code { background: #f6f8fa; padding: 0.1rem 0.3rem; border-radius: 4px; }
"""


def inline_images(page: str, base: Path) -> str:
    """Replace ``src="relative.png"`` with a base64 data URI of the file under ``base``
    (``STAGE/name.png``, a picture the stage STAGE draws)."""

    def embed(match: re.Match[str]) -> str:
        picture = base / html.unescape(match.group(1))
        data = read_bounded(picture, MAX_PICTURE_BYTES, rerun(picture.parent.name))
        return f'src="data:image/png;base64,{base64.b64encode(data).decode()}"'

    return re.sub(r'src="([^":]+\.png)"', embed, page)


def render_html(markdown: str, title: str, base: Path) -> str:
    """A standalone page: the Markdown rendered (tables included) with images inlined."""
    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown)
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        f"{inline_images(body, base)}</body>\n</html>\n"
    )
