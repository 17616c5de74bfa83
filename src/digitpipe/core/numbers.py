"""How results are written: six decimals, since the metrics come from float32 computations and
more digits would only show their rounding."""

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
    if isinstance(value, list):
        return [json_safe(item) for item in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value
