"""Worst-case report: the most confused pair, the most confident mistakes, the typical digits."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from digitpipe.core.config import EvaluateParams
from digitpipe.core.numbers import rounded
from digitpipe.dataset.images import ImageSet
from digitpipe.evaluate.figures import notice_figure, probability_gallery
from digitpipe.outputs import evaluate as outputs
from digitpipe.outputs import write_report
from digitpipe.plotting import save_figure

GALLERY_COLUMNS = 8
TYPICAL_COLUMNS = 10  # MNIST's classes in one row, each bar named (12 left no room for names)
LEGEND = "bars: class probabilities; green = actual class, red = predicted class"


def most_confused_pair(matrix: np.ndarray) -> tuple[int, int] | None:
    """(actual, predicted) of the largest off-diagonal count; None when there is no mistake.

    Ties go to the first cell in row order.
    """
    errors = np.array(matrix, copy=True)
    np.fill_diagonal(errors, 0)
    if not errors.any():
        return None
    actual, predicted = divmod(int(errors.argmax()), len(errors))
    return actual, predicted


def doubt(probabilities: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """1 - p(class) per row, as the sum of the other classes' probabilities.

    Ranks rows by p(class) even where float32 rounds it to exactly 1.
    """
    others = probabilities.astype(np.float64)
    others[np.arange(len(others)), classes] = 0.0
    return others.sum(axis=1)


def by_confidence(rows: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """``rows`` ordered by their predicted-class probability, highest first (stable)."""
    picked = probabilities[rows]
    return rows[np.argsort(doubt(picked, picked.argmax(axis=1)), kind="stable")]


def typical_rows(probabilities: np.ndarray, labels: np.ndarray) -> dict[int, int]:
    """For each class present, the row of its image with the highest probability of that class."""
    typical = {}
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        typical[int(label)] = int(rows[doubt(probabilities[rows], label).argmin()])
    return typical


def _caption(split: ImageSet, probabilities: np.ndarray, row: int) -> str:
    """Image id and the predicted class's probability, then "actual -> predicted" (just the
    class when right)."""
    names, actual, guess = split.class_names, split.labels[row], probabilities[row].argmax()
    classes = names[actual] if actual == guess else f"{names[actual]} \u2192 {names[guess]}"
    return f"{split.ids[row]}  p={probabilities[row, guess]:.2f}\n{classes}"


def _gallery(
    split: ImageSet,
    probabilities: np.ndarray,
    rows: np.ndarray,
    title: str,
    path: Path,
    columns: int = GALLERY_COLUMNS,
) -> None:
    """A probability gallery of ``rows`` (a notice when there are none) saved to ``path``."""
    if not len(rows):
        save_figure(notice_figure(title, "no misclassified test images"), path)
        return
    figure = probability_gallery(
        split.images[rows],
        probabilities[rows],
        split.labels[rows],
        [_caption(split, probabilities, row) for row in rows],
        split.class_names,
        min(columns, len(rows)),
        f"{title}\n{LEGEND}",
    )
    save_figure(figure, path)


def pair_report(
    split: ImageSet, probabilities: np.ndarray, matrix: np.ndarray, shown: int, path: Path
) -> dict | None:
    """The most confused pair with all its image ids (most confident first); its gallery."""
    pair = most_confused_pair(matrix)
    if pair is None:
        _gallery(split, probabilities, np.zeros(0, np.int64), "Most confused pair: none", path)
        return None
    actual, guess = pair
    names = split.class_names
    wrong = (split.labels == actual) & (probabilities.argmax(axis=1) == guess)
    rows = by_confidence(np.flatnonzero(wrong), probabilities)
    which = "all shown" if len(rows) <= shown else f"the {shown} most confident shown"
    title = (
        f"Most confused pair: actual {names[actual]} predicted as {names[guess]} "
        f"({len(rows)} images, {which})"
    )
    _gallery(split, probabilities, rows[:shown], title, path)
    return {
        "actual": names[actual],
        "predicted": names[guess],
        "count": len(rows),
        "image_ids": split.ids[rows].tolist(),
    }


def mistakes_report(split: ImageSet, probabilities: np.ndarray, k: int, path: Path) -> list[dict]:
    """The k mistakes with the highest predicted-class probability, and their gallery."""
    predicted = probabilities.argmax(axis=1)
    rows = by_confidence(np.flatnonzero(predicted != split.labels), probabilities)[:k]
    _gallery(split, probabilities, rows, f"The {len(rows)} most confident mistakes", path)
    names = split.class_names
    return [
        {
            "image_id": split.ids[row],
            "actual": names[split.labels[row]],
            "predicted": names[predicted[row]],
            "probability": rounded(probabilities[row, predicted[row]]),
        }
        for row in rows
    ]


def typical_report(split: ImageSet, probabilities: np.ndarray, path: Path) -> dict:
    """The most typical image of each class present, in one row (up to 12 classes)."""
    typical = typical_rows(probabilities, split.labels)
    names = split.class_names
    rows = np.array(list(typical.values()), dtype=np.int64)
    title = "Most typical test image of each class (highest probability of its own class)"
    _gallery(split, probabilities, rows, title, path, columns=TYPICAL_COLUMNS)
    return {
        names[k]: {"image_id": split.ids[row], "probability": rounded(probabilities[row, k])}
        for k, row in typical.items()
    }


def write_worst_cases(
    split: ImageSet,
    probabilities: np.ndarray,
    matrix: np.ndarray,
    settings: EvaluateParams,
    staging: Path,
) -> dict:
    """Write ``worst_cases.json`` and the three pictures at their declared paths under
    ``staging``; return the JSON."""
    report = {
        "most_confused_pair": pair_report(
            split, probabilities, matrix, settings.pair_gallery_size, staging / outputs.PAIR_PICTURE
        ),
        "confident_mistakes": mistakes_report(
            split, probabilities, settings.confident_mistakes, staging / outputs.MISTAKES_PICTURE
        ),
        "typical": typical_report(split, probabilities, staging / outputs.TYPICAL_PICTURE),
    }
    write_report(staging / outputs.WORST_CASES, outputs.WorstCases, report)
    return report
