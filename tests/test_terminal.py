"""What the stages print for a person at a terminal: the train stage's header and the evaluate
summary are wrapped between words at the terminal's width (at 80 columns they wrapped
mid-word)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from digitpipe.evaluate.run import headline

DIGITPIPE = str(Path(sys.executable).parent / "digitpipe")
COLUMNS = 60  # narrower than either message


def stage(project: Path, name: str) -> str:
    """The stage's standard output, run as a user would, in a terminal COLUMNS wide."""
    result = subprocess.run(
        [DIGITPIPE, name],
        cwd=project,
        env=os.environ | {"COLUMNS": str(COLUMNS)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def message(output: str, start: str) -> list[str]:
    """The line beginning ``start`` and the indented lines continuing it."""
    lines = output.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith(start))
    found = [lines[first]]
    for line in lines[first + 1 :]:
        if not line.startswith("  "):
            break
        found.append(line)
    return found


def unwrapped(lines: list[str]) -> str:
    return " ".join(line.strip() for line in lines)


@pytest.mark.slow
def test_the_train_header_and_evaluate_summary_wrap_between_words(ingested):
    header = message(stage(ingested, "train"), "train: ")
    # A break inside a word would leave a space in it, and the sentence would not match.
    sentence = r"train: \w+ \([\d,]+ parameters\) on [\d,]+ 28x28 images, 1 epoch of batch 32, "
    memory = r"; in memory \([\d.]+ GB of pixels, budget [\d.]+ GB\)"
    assert re.fullmatch(sentence + r"1 x cpu \([\w-]+\)" + memory, unwrapped(header)), header
    summary = message(stage(ingested, "evaluate"), "evaluate: ")
    metrics = json.loads((ingested / "reports/evaluate/scores.json").read_text())["test"]
    assert unwrapped(summary) == f"evaluate: {headline(metrics)}; reports in reports/evaluate"
    for lines in (header, summary):
        assert len(lines) > 1 and max(map(len, lines)) <= COLUMNS, lines
