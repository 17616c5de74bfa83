"""Evaluation figures: digits, each with a bar chart of its class probabilities beneath it."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure

from digitpipe.plotting import mosaic

ACTUAL = "#1a9850"  # green: the true class
PREDICTED = "#d73027"  # red: the predicted class, where it is wrong
OTHER = "#8c8c8c"
TRACK = "#ececec"  # the full height of a bar, p = 1
IMAGE_INCHES = 1.2  # each digit is drawn this wide, whatever its size in pixels
LABELLED_CLASSES = 12  # up to this many classes every bar is named beneath it


def _bars(
    x: np.ndarray, bottom: np.ndarray, values: np.ndarray, width: float, scale: float
) -> np.ndarray:
    """Corners (bars, 4, 2) of upright bars centred at ``x`` in image coordinates (y down)."""
    x0, x1 = (x - width / 2).ravel(), (x + width / 2).ravel()
    y0 = bottom.ravel().astype(float)
    y1 = y0 - values.ravel() * scale
    return np.stack(
        [np.stack(corner, axis=1) for corner in ((x0, y0), (x0, y1), (x1, y1), (x1, y0))], axis=1
    )


def probability_gallery(
    images: np.ndarray,
    probabilities: np.ndarray,
    actual: np.ndarray,
    captions: Sequence[str],
    class_names: Sequence[str],
    columns: int,
    title: str,
) -> Figure:
    """A grid of digits, a caption above each and its probability bars beneath.

    The actual class's bar is green, the predicted class's red when it differs, others grey;
    each bar stands in a light track of full height (probability 1). Bars are named below
    them up to ``LABELLED_CLASSES`` classes (beyond, the caption names the two classes).
    """
    count, height, width = images.shape
    classes = len(class_names)
    per_inch = width / IMAGE_INCHES  # image pixels per inch of figure

    def pixels(inches: float) -> int:
        return max(1, round(inches * per_inch))

    labelled = classes <= LABELLED_CLASSES
    spacer, band, gap = pixels(0.06), pixels(0.42), pixels(0.25)
    bar_height = round(height * 0.8)
    label_height = pixels(0.16) if labelled else 0
    padded = np.zeros((count, height + spacer + bar_height + label_height, width), images.dtype)
    padded[:, :height] = images
    canvas = mosaic(padded, columns, gap, band)
    figure, ax = plt.subplots(
        figsize=(canvas.shape[1] / per_inch, canvas.shape[0] / per_inch + 0.6)
    )
    ax.imshow(canvas, cmap="gray_r", vmin=0, vmax=255, interpolation="nearest")

    slot = width / classes
    cell = np.arange(count)
    left = (cell % columns) * (width + gap)
    top = (cell // columns) * (padded.shape[1] + band + gap) + band
    base = top + height + spacer + bar_height
    x = left[:, None] + slot * (np.arange(classes) + 0.5)
    predicted = probabilities.argmax(axis=1)
    colours = np.full((count, classes), OTHER, dtype=object)
    colours[cell, predicted] = PREDICTED
    colours[cell, actual] = ACTUAL
    bottoms = np.broadcast_to(base[:, None], x.shape)
    tracks = _bars(x, bottoms, np.ones_like(x), slot * 0.8, bar_height)
    ax.add_collection(PolyCollection(tracks, facecolors=TRACK, edgecolors="none"))
    bars = _bars(x, bottoms, probabilities, slot * 0.8, bar_height)
    ax.add_collection(PolyCollection(bars, facecolors=colours.ravel(), edgecolors="none"))

    label_size = min(7.0, 0.85 * IMAGE_INCHES * 72 / classes)
    for n in cell:
        ax.text(left[n] + width / 2, top[n] - 1, captions[n], ha="center", va="bottom", fontsize=7)
        if not labelled:
            continue
        marked = {int(actual[n]), int(predicted[n])}
        for k, name in enumerate(class_names):
            ax.text(
                x[n, k],
                base[n] + spacer,
                name,
                ha="center",
                va="top",
                fontsize=label_size,
                color=colours[n, k],
                fontweight="bold" if k in marked else "normal",
            )
    ax.set_xlim(-0.5, canvas.shape[1] - 0.5)
    ax.set_ylim(canvas.shape[0] - 0.5, -0.5)
    ax.axis("off")
    ax.set_title(title, fontsize=10)
    return figure


def notice_figure(title: str, message: str) -> Figure:
    """A small figure saying why there is nothing to show (e.g. no mistakes)."""
    figure, ax = plt.subplots(figsize=(5, 1.6))
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=11)
    ax.axis("off")
    ax.set_title(title, fontsize=10)
    return figure
