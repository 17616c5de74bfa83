"""User-facing errors: one clear message, no traceback."""

from __future__ import annotations

import reprlib


class DigitpipeError(Exception):
    """An error caused by bad input or bad parameters; its message tells the user how to fix it."""


def excerpt(value: object, limit: int = 60, *, quote: bool = True) -> str:
    """``value`` shortened for a message to at most ``limit`` characters: its repr (a long string
    elided in the middle), or with ``quote=False`` its text (cut at the end)."""
    short = reprlib.Repr()
    short.maxstring = short.maxother = limit
    text = short.repr(value) if quote else str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def invalid_field(item: dict, limit: int = 80) -> str:
    """One of pydantic's validation errors as "key: problem (got value)", quoting at most
    ``limit`` characters of the key and of the value. A validator's own sentence is given as
    written; a model validator's input, a whole section, is not quoted (its sentence names the
    keys)."""
    key = ".".join(excerpt(part, limit, quote=False) for part in item["loc"]) or "(top level)"
    own = item["type"] == "value_error"
    problem = item["msg"].removeprefix("Value error, ") if own else item["msg"]
    quiet = item["type"] == "missing" or (own and isinstance(item["input"], dict))
    got = "" if quiet else f" (got {excerpt(item['input'], limit)})"
    return f"{key}: {excerpt(problem, 300, quote=False)}{got}"
