"""Shared benchmark timing: the median of repeated runs after a warm-up."""

from __future__ import annotations

import statistics
import timeit
from collections.abc import Callable

REPEATS = 5


def median_time(action: Callable[[], object], repeats: int = REPEATS) -> float:
    """Median wall time in seconds of ``repeats`` runs of ``action``, after one warm-up run."""
    action()
    return statistics.median(timeit.repeat(action, number=1, repeat=repeats))
