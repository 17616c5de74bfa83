"""How numbers are written: results with six decimals, since the metrics come from float32
computations and more digits would only show their rounding; counts with their noun."""

from __future__ import annotations

import math

DIGITS = 6


def rounded(value: float) -> float:
    """``value`` (a float, numpy or 0-d tensor scalar) as a float with ``DIGITS`` decimals."""
    return round(float(value), DIGITS)


def json_safe(value: object) -> object:
    """``value`` (nested dicts and lists) with NaN and infinities as None, so it serialises as
    standard JSON (null)."""
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value


def counted(count: int, noun: str) -> str:
    """``count`` with its noun, in the singular for one: "1 image", "10,000 images"."""
    return f"{count:,} {noun}" if count == 1 else f"{count:,} {noun}s"
