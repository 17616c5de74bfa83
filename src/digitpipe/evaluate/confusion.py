"""The confusion matrix: counts, its CSV forms (matrix and long pairs) and an annotated heatmap."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from digitpipe.core.atomic import atomic_path
from digitpipe.plotting import (
    CHAR_EM,
    PAGE_INCHES,
    SMALLEST_LABEL,
    class_ticks,
    shortened,
    widest_pt,
)

CORNER = "actual\\predicted"
ZERO = "#c8c8c8"  # zero counts in light grey, so the eye skips them
MANY_CLASSES = 20  # beyond this, smaller cells and zero cells left blank
TICK_LABEL_PT = 10  # matplotlib's default tick label size


def confusion_counts(labels: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
    """(classes, classes) int64 counts: rows = actual class, columns = predicted class."""
    cells = np.bincount(labels * classes + predicted, minlength=classes * classes)
    return cells.reshape(classes, classes)


def write_confusion_csv(
    matrix: np.ndarray, class_names: Sequence[str], path: str | os.PathLike
) -> None:
    """Header row of class names, then one row per actual class: its name, then its counts."""
    with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([CORNER, *class_names])
        for name, row in zip(class_names, matrix.tolist(), strict=True):
            writer.writerow([name, *row])


def write_confusion_pairs(
    labels: np.ndarray,
    predicted: np.ndarray,
    class_names: Sequence[str],
    path: str | os.PathLike,
) -> None:
    """Long format for DVC's ``confusion`` plot: columns ``actual,predicted``, one row per image."""
    names = np.asarray(class_names, dtype=object)
    with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["actual", "predicted"])
        writer.writerows(zip(names[labels], names[predicted], strict=True))


def _cell_colours(matrix: np.ndarray) -> np.ndarray:
    """RGBA per cell: correct counts in blues, errors in reds, each on its own log scale.

    Zero cells are white; the smallest non-zero count is already clearly tinted.
    """
    colours = np.ones((*matrix.shape, 4))
    diagonal = np.eye(len(matrix), dtype=bool)
    for mask, cmap in ((diagonal, plt.get_cmap("Blues")), (~diagonal, plt.get_cmap("Reds"))):
        cells = mask & (matrix > 0)
        if cells.any():
            norm = LogNorm(vmin=1, vmax=max(2, matrix[cells].max()))
            colours[cells] = cmap(0.2 + 0.75 * norm(matrix[cells].astype(float)))
    return colours


def confusion_figure(matrix: np.ndarray, class_names: Sequence[str], title: str) -> Figure:
    """Annotated heatmap of the counts: correct in blue, errors in red (each on a log scale).

    At most PAGE_INCHES wide, so that report.html shows it at full size; the counts are drawn
    as large as their cells allow, and left out (said in the title) where that is below
    SMALLEST_LABEL. Beyond ``MANY_CLASSES`` classes zero cells stay blank, so the few counts
    stand out.
    """
    classes = len(class_names)
    colours = _cell_colours(matrix)
    many = classes > MANY_CLASSES
    side = min(PAGE_INCHES, max(4.5, 0.55 * classes + 1.5))
    figure, ax = plt.subplots(figsize=(side, side + 0.3), layout="constrained")
    ax.imshow(colours, interpolation="nearest")
    labels = [shortened(name) for name in class_names]
    # The axes get the figure less the tick labels, the axis label and a little air.
    margin_pt = widest_pt(labels, TICK_LABEL_PT) + 2.5 * TICK_LABEL_PT + 12
    cell_pt = (side * 72 - margin_pt) / classes
    digits = len(str(int(matrix.max(initial=0))))
    count_pt = min(9.0, 0.7 * cell_pt, 0.9 * cell_pt / (CHAR_EM * digits))
    counted = count_pt >= SMALLEST_LABEL
    if counted:
        luminance = colours[..., :3] @ np.array([0.299, 0.587, 0.114])
        for (i, j), count in np.ndenumerate(matrix):
            if count or not many:
                colour = ZERO if count == 0 else "white" if luminance[i, j] < 0.55 else "black"
                ax.text(j, i, count, ha="center", va="center", fontsize=count_pt, color=colour)
    class_ticks(ax.xaxis, class_names, cell_pt, TICK_LABEL_PT)
    class_ticks(ax.yaxis, class_names, cell_pt, TICK_LABEL_PT)
    ticks = np.arange(classes)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("actual class")
    ax.set_xticks(ticks[:-1] + 0.5, minor=True)
    ax.set_yticks(ticks[:-1] + 0.5, minor=True)
    ax.grid(which="minor", color="white", linewidth=1.5 if classes <= MANY_CLASSES else 0.5)
    ax.tick_params(which="both", length=0)
    ax.spines[:].set_visible(False)
    legend = "blue: correct, red: errors (each on a log colour scale)"
    if not counted:
        legend += "; counts in evaluate/confusion.csv"
    ax.set_title(f"{title}\n{legend}", fontsize=10)
    return figure
