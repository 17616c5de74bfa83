"""Worst-case report: the most confused pair, the most confident mistakes, the typical digits."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from digitpipe.atomic import write_json
from digitpipe.config import EvaluateParams
from digitpipe.data.images import ImageSet
from digitpipe.evaluate.figures import notice_figure, probability_gallery
from digitpipe.plots import digit_grid, save_figure

PAIR_FILE = "most_confused_pair.png"
MISTAKES_FILE = "confident_mistakes.png"
TYPICAL_FILE = "typical_images.png"
GALLERY_COLUMNS = 8
LEGEND = "bars: class probabilities; green = actual class, red = predicted class"


def most_confused_pair(matrix: np.ndarray) -> tuple[int, int] | None:
    """(actual, predicted) of the largest off-diagonal count (first in row order on ties);
    None when there is no mistake."""
    errors = np.array(matrix, copy=True)
    np.fill_diagonal(errors, 0)
    if not errors.any():
        return None
    actual, predicted = divmod(int(errors.argmax()), len(errors))
    return actual, predicted


def doubt(probabilities: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """1 - p(class) per row, summed over the other classes: still ranks rows where float32
    rounds p(class) to exactly 1."""
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


def _gallery(split: ImageSet, probabilities: np.ndarray, rows: np.ndarray, title: str, path: Path):
    if not len(rows):
        save_figure(notice_figure(title, "no misclassified test images"), path)
        return
    names = split.class_names
    predicted = probabilities[rows].argmax(axis=1)
    captions = [
        f"{split.ids[row]}\n{names[split.labels[row]]} \u2192 {names[guess]}  "
        f"p={probabilities[row, guess]:.2f}"
        for row, guess in zip(rows, predicted, strict=True)
    ]
    figure = probability_gallery(
        split.images[rows],
        probabilities[rows],
        split.labels[rows],
        captions,
        names,
        min(GALLERY_COLUMNS, len(rows)),
        f"{title}\n{LEGEND}",
    )
    save_figure(figure, path)


def write_worst_cases(
    split: ImageSet,
    probabilities: np.ndarray,
    matrix: np.ndarray,
    settings: EvaluateParams,
    out_dir: Path,
) -> dict:
    """Write ``worst_cases.json`` and the three galleries into ``out_dir``; return the JSON."""
    names, labels = split.class_names, split.labels
    predicted = probabilities.argmax(axis=1)
    pair = most_confused_pair(matrix)
    pair_report = None
    pair_rows = np.zeros(0, dtype=np.int64)
    title = "Most confused pair: none (no mistakes)"
    if pair is not None:
        actual, guess = pair
        rows = np.flatnonzero((labels == actual) & (predicted == guess))
        pair_rows = by_confidence(rows, probabilities)
        pair_report = {
            "actual": names[actual],
            "predicted": names[guess],
            "count": len(pair_rows),
            "image_ids": split.ids[pair_rows].tolist(),
        }
        shown = min(len(pair_rows), settings.pair_gallery_size)
        title = (
            f"Most confused pair: actual {names[actual]} predicted as {names[guess]} "
            f"({len(pair_rows)} images; the {shown} most confident shown)"
        )
    _gallery(
        split, probabilities, pair_rows[: settings.pair_gallery_size], title, out_dir / PAIR_FILE
    )

    mistakes = by_confidence(np.flatnonzero(predicted != labels), probabilities)
    mistakes = mistakes[: settings.confident_mistakes]
    _gallery(
        split,
        probabilities,
        mistakes,
        f"The {len(mistakes)} most confident mistakes",
        out_dir / MISTAKES_FILE,
    )

    typical = typical_rows(probabilities, labels)
    rows = np.array(list(typical.values()), dtype=np.int64)
    save_figure(
        digit_grid(
            split.images[rows],
            [f"{names[k]}: {probabilities[row, k]:.2f}" for k, row in typical.items()],
            len(rows),
            "Most typical test image of each class (highest probability of its own class)",
        ),
        out_dir / TYPICAL_FILE,
    )

    report = {
        "most_confused_pair": pair_report,
        "confident_mistakes": [
            {
                "image_id": split.ids[row],
                "actual": names[labels[row]],
                "predicted": names[predicted[row]],
                "probability": round(float(probabilities[row, predicted[row]]), 6),
            }
            for row in mistakes
        ],
        "typical": {
            names[k]: {
                "image_id": split.ids[row],
                "probability": round(float(probabilities[row, k]), 6),
            }
            for k, row in typical.items()
        },
    }
    write_json(out_dir / "worst_cases.json", report)
    return report
