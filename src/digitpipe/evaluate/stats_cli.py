"""`digitpipe stats CONFUSION.csv [--json]`: the confusion-matrix statistics of any CSV."""

from __future__ import annotations

import json
import math
from pathlib import Path

from digitpipe.evaluate.stats import confusion_stats, read_confusion_csv, to_markdown


def strict(value: object) -> object:
    """``value`` with every NaN replaced by None, so it serialises as standard JSON (null)."""
    if isinstance(value, dict):
        return {key: strict(item) for key, item in value.items()}
    if isinstance(value, list):
        return [strict(item) for item in value]
    return None if isinstance(value, float) and math.isnan(value) else value


def stats_command(path: Path, as_json: bool) -> str:
    """The text the command prints: Markdown tables, or one standard JSON object (null where a
    statistic is undefined, i.e. NaN).

    Raises DigitpipeError on a missing or malformed file or a matrix that cannot be summarised.
    """
    stats = confusion_stats(*read_confusion_csv(path))
    if as_json:
        return json.dumps(strict(stats.to_dict()), indent=2, allow_nan=False)
    return to_markdown(stats).rstrip("\n")
