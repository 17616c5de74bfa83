"""Evaluation figures: digits, each with a bar chart of its class probabilities beneath it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure

from digitpipe.plotting import (
    CAPTION_ROOM,
    PAGE_INCHES,
    SMALLEST_CAPTION,
    fit_caption,
    mosaic,
    picture_axes,
    points_per_pixel,
    widest_pt,
)

ACTUAL = "#1a9850"  # green: the true class
PREDICTED = "#d73027"  # red: the predicted class, where it is wrong
OTHER = "#8c8c8c"
TRACK = "#ececec"  # the full height of a bar, p = 1
IMAGE_INCHES = 1.2  # each image is drawn this wide, whatever its size in pixels
GAP_INCHES = 0.25  # between images
LABELLED_CLASSES = 12  # up to this many classes every bar is named beneath it


def bar_label_size(class_names: Sequence[str], image_in: float) -> float | None:
    """The font size at which every class name fits under its own bar (CAPTION_ROOM of its
    slot, in bold, as the actual and predicted classes are named), or None when they cannot be
    told apart there (too many classes, or names too long)."""
    if len(class_names) > LABELLED_CLASSES:
        return None
    room = CAPTION_ROOM * image_in * 72 / len(class_names)
    size = min(7.0, room)
    size = min(size, size * room / widest_pt(class_names, size, bold=True))
    return size if size >= SMALLEST_CAPTION else None


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


@dataclass(frozen=True)
class Grid:
    """Where each cell of a probability gallery lies on its canvas (image coordinates)."""

    canvas: np.ndarray
    left: np.ndarray  # (cells,) x of each image's left edge
    top: np.ndarray  # (cells,) y of each image's top edge
    base: np.ndarray  # (cells,) y of the bars' baseline
    x: np.ndarray  # (cells, classes) centre of each bar
    slot: float  # width of one bar's slot
    bar_height: int
    spacer: int


def _grid(images: np.ndarray, classes: int, columns: int, labelled: bool, image_in: float) -> Grid:
    """Tile the images, each ``image_in`` inches wide, with room beneath each for its bars
    (and their names when labelled)."""
    count, height, width = images.shape
    per_inch = width / image_in  # image pixels per inch of figure

    def pixels(inches: float) -> int:
        return max(1, round(inches * per_inch))

    spacer, band, gap = pixels(0.06), pixels(0.42), pixels(GAP_INCHES)
    bar_height = round(height * 0.8)
    label_height = pixels(0.16) if labelled else 0
    padded = np.zeros((count, height + spacer + bar_height + label_height, width), images.dtype)
    padded[:, :height] = images
    cell = np.arange(count)
    left = (cell % columns) * (width + gap)
    top = (cell // columns) * (padded.shape[1] + band + gap) + band
    slot = width / classes
    return Grid(
        canvas=mosaic(padded, columns, gap, band),
        left=left,
        top=top,
        base=top + height + spacer + bar_height,
        x=left[:, None] + slot * (np.arange(classes) + 0.5),
        slot=slot,
        bar_height=bar_height,
        spacer=spacer,
    )


def _draw_bars(ax, grid: Grid, probabilities: np.ndarray, colours: np.ndarray) -> None:
    """Each cell's probability bars, each in a light track of full height (p = 1)."""
    bottoms = np.broadcast_to(grid.base[:, None], grid.x.shape)
    width = grid.slot * 0.8
    tracks = _bars(grid.x, bottoms, np.ones_like(grid.x), width, grid.bar_height)
    ax.add_collection(PolyCollection(tracks, facecolors=TRACK, edgecolors="none"))
    bars = _bars(grid.x, bottoms, probabilities, width, grid.bar_height)
    ax.add_collection(PolyCollection(bars, facecolors=colours.ravel(), edgecolors="none"))


def _draw_class_names(
    ax,
    grid: Grid,
    class_names: Sequence[str],
    colours: np.ndarray,
    marked: list[set[int]],
    size: float,
) -> None:
    """Each bar's class name beneath it, bold for the actual and predicted classes."""
    for n, bold in enumerate(marked):
        for k, name in enumerate(class_names):
            ax.text(
                grid.x[n, k],
                grid.base[n] + grid.spacer,
                name,
                ha="center",
                va="top",
                fontsize=size,
                color=colours[n, k],
                fontweight="bold" if k in bold else "normal",
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
    them when the names fit there (else the caption names the two classes); captions shrink or
    are cut short to stay within their cell.
    """
    count, _, width = images.shape
    # Each image IMAGE_INCHES wide, less where the columns would not fit the report's width.
    image_in = min(IMAGE_INCHES, PAGE_INCHES / (columns * (1 + GAP_INCHES / IMAGE_INCHES)))
    label_size = bar_label_size(class_names, image_in)
    grid = _grid(images, len(class_names), columns, label_size is not None, image_in)
    per_inch = max(width / image_in, grid.canvas.shape[1] / PAGE_INCHES)  # gaps were rounded
    figure, ax = picture_axes(grid.canvas.shape[1] / per_inch, grid.canvas.shape[0] / per_inch, 0.6)
    ax.imshow(grid.canvas, cmap="gray_r", vmin=0, vmax=255, interpolation="nearest")
    cell, predicted = np.arange(count), probabilities.argmax(axis=1)
    colours = np.full((count, len(class_names)), OTHER, dtype=object)
    colours[cell, predicted] = PREDICTED
    colours[cell, actual] = ACTUAL
    _draw_bars(ax, grid, probabilities, colours)
    cell_pt = width * points_per_pixel(figure, ax, grid.canvas.shape)
    for n in cell:
        caption, size = fit_caption(captions[n], cell_pt)
        ax.text(
            grid.left[n] + width / 2,
            grid.top[n] - 1,
            caption,
            ha="center",
            va="bottom",
            fontsize=size,
        )
    if label_size is not None:
        marked = [{int(a), int(p)} for a, p in zip(actual, predicted, strict=True)]
        _draw_class_names(ax, grid, class_names, colours, marked, label_size)
    ax.set_xlim(-0.5, grid.canvas.shape[1] - 0.5)
    ax.set_ylim(grid.canvas.shape[0] - 0.5, -0.5)
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
