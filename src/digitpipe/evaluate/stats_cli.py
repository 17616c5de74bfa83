"""`digitpipe stats CONFUSION.csv [--json]`: the confusion-matrix statistics of any CSV."""

from __future__ import annotations

import json
from pathlib import Path

from digitpipe.evaluate.stats import confusion_stats, read_confusion_csv, to_markdown


def stats_command(path: Path, as_json: bool) -> str:
    """The text the command prints: Markdown tables, or one JSON object (NaN where undefined).

    Raises DigitpipeError on a missing or malformed file or a matrix that cannot be summarised.
    """
    stats = confusion_stats(*read_confusion_csv(path))
    if as_json:
        return json.dumps(stats.to_dict(), indent=2)
    return to_markdown(stats).rstrip("\n")
