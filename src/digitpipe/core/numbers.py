"""How results are written: six decimals, since the metrics come from float32 computations and
more digits would only show their rounding."""

from __future__ import annotations

DIGITS = 6


def rounded(value: float) -> float:
    """``value`` (a float, numpy or 0-d tensor scalar) as a float with ``DIGITS`` decimals."""
    return round(float(value), DIGITS)
