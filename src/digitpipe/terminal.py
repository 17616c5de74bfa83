"""Lines for a person at a terminal: long messages wrapped between words to its width."""

from __future__ import annotations

import shutil
import textwrap


def wrapped(text: str, width: int | None = None, first: str = "", rest: str = "  ") -> str:
    """``text`` in lines of at most ``width`` columns (default: the terminal's, 80 when the
    output is no terminal), broken between words only: a path or URI longer than a line stays
    whole. The first line starts with ``first``, the others with ``rest``."""
    return textwrap.fill(
        text,
        width or shutil.get_terminal_size().columns,
        initial_indent=first,
        subsequent_indent=rest,
        break_long_words=False,
        break_on_hyphens=False,
    )
