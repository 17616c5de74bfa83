"""Shared figure helpers (matplotlib, headless): digit grids and atomic PNG saving."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.textpath import TextToPath

from digitpipe.core.atomic import atomic_path

# Class names and titles are drawn as written: "$x$" is not mathtext (a bad formula would raise).
matplotlib.rcParams["text.parse_math"] = False

PIXELS_PER_INCH = 32  # image grids: each image pixel is this small on the figure
# report.html shows a picture at most 1,068 px wide (1,100 less padding) and shrinks a wider one,
# its text with it: at 100 dpi (save_figure's), 10.4 inches and the 0.1-inch border of a tight
# bounding box on each side (1,060 px) stay at full size.
PAGE_INCHES = 10.4
LABEL_CHARS = 18  # longer class names are cut to this many characters, with an ellipsis
SMALLEST_LABEL = 6.0  # points (8 px): the smallest tick label or count still read at a glance
CHAR_EM = 0.6  # the average width of a character, in font sizes (DejaVu Sans)
SMALLEST_CAPTION = 5.0  # captions shrink down to this size (points) to fit their cell, then wrap
CAPTION_LINES = 4  # lines a caption may wrap into
CAPTION_ROOM = 0.85  # of a cell's width: captions filling it ran into their neighbours'


def fit_caption(text: str, width_pt: float, largest: float = 7.0) -> tuple[str, float]:
    """``text`` and a font size at which its lines fit CAPTION_ROOM of ``width_pt`` points (the
    rest keeps neighbouring captions apart): the largest size up to ``largest`` that fits, else
    ``SMALLEST_CAPTION``, with long lines wrapped (at most ``CAPTION_LINES`` lines)."""
    lines = text.split("\n")
    room = CAPTION_ROOM * width_pt
    widest = widest_pt(lines, largest)
    if widest <= room or largest * room / widest >= SMALLEST_CAPTION:
        return text, min(largest, largest * room / max(widest, 1e-9))
    size = SMALLEST_CAPTION
    chars = max(1, int(room / (CHAR_EM * size)))
    wrapped = [part for line in lines for part in textwrap.wrap(line, chars) or [""]]
    if len(wrapped) > CAPTION_LINES:
        wrapped = wrapped[:CAPTION_LINES]
        wrapped[-1] = wrapped[-1][: chars - 1] + "\u2026"
    return "\n".join(wrapped), size


def shortened(name: str, chars: int = LABEL_CHARS) -> str:
    """``name`` cut to ``chars`` characters when longer, an ellipsis in the middle: names that
    differ only at the end ("rounded rectangle 4", "... 10") stay apart."""
    if len(name) <= chars:
        return name
    head = (chars - 1) // 2
    return name[:head] + "\u2026" + name[len(name) - (chars - 1 - head) :]


def widest_pt(texts: Sequence[str], size: float, bold: bool = False) -> float:
    """The width in points of the widest of ``texts`` in the default font at ``size``."""
    font, measure = FontProperties(size=size, weight="bold" if bold else "normal"), TextToPath()
    return max(measure.get_text_width_height_descent(t, font, ismath=False)[0] for t in texts)


def class_ticks(
    axis, names: Sequence[str], slot_pt: float, largest: float = 10.0, at: Sequence[float] = ()
) -> None:
    """Name the classes on ``axis`` (an x or y axis), at 0, 1, ... or at the positions ``at``,
    each with a slot ``slot_pt`` points wide: at a size that fits the slot (at least
    SMALLEST_LABEL), long names shortened, x labels turned upright (rotation 90) when they
    would run into their neighbours."""
    labels = [shortened(name) for name in names]
    size = max(SMALLEST_LABEL, min(largest, 0.8 * slot_pt))
    turned = axis.axis_name == "x" and widest_pt(labels, size) + 0.3 * size > slot_pt
    positions = list(at) or list(range(len(names)))
    axis.set_ticks(positions, labels, fontsize=size, rotation=90 if turned else 0)


def points_per_pixel(figure: Figure, ax, shape: tuple[int, ...]) -> float:
    """How wide, in points, one pixel of an image of ``shape`` drawn to fill ``ax`` is (equal
    aspect: the tighter of the two directions decides)."""
    box = ax.get_position()
    inches = min(
        figure.get_figwidth() * box.width / shape[1], figure.get_figheight() * box.height / shape[0]
    )
    return inches * 72


def picture_axes(width_in: float, height_in: float, title_in: float) -> tuple[Figure, Axes]:
    """A figure whose axes fill ``width_in`` x ``height_in`` inches exactly, with ``title_in``
    above for the title: an image drawn in them has the scale its size was chosen for
    (default margins shrank it to 78%, and its captions with it)."""
    figure = plt.figure(figsize=(width_in, height_in + title_in))
    ax = figure.add_axes((0.0, 0.0, 1.0, height_in / (height_in + title_in)))
    return figure, ax


def save_figure(figure: Figure, path: str | os.PathLike, dpi: int = 100) -> None:
    """Save ``figure`` as PNG atomically and release it."""
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(figure)


def mosaic(images: np.ndarray, columns: int, gap: int, band: int) -> np.ndarray:
    """Tile (N, H, W) images into one array, ``gap`` pixels apart with a ``band`` above each."""
    count, height, width = images.shape
    rows = max(1, -(-count // columns))
    cell_h, cell_w = height + band + gap, width + gap
    canvas = np.zeros((rows * cell_h, columns * cell_w), dtype=images.dtype)
    for k, image in enumerate(images):
        top, left = (k // columns) * cell_h + band, (k % columns) * cell_w
        canvas[top : top + height, left : left + width] = image
    return canvas


def digit_grid(images: np.ndarray, titles: list[str], columns: int, title: str) -> Figure:
    """A grid of grayscale digits (dark ink on white, as on paper), a caption above each.

    Drawn as one image, so a grid of hundreds of digits renders in a fraction of a second.
    """
    height, width = images.shape[1:]
    band, gap = max(8, height // 3), max(2, width // 10)
    canvas = mosaic(images, columns, gap, band)
    figure, ax = picture_axes(
        canvas.shape[1] / PIXELS_PER_INCH, canvas.shape[0] / PIXELS_PER_INCH, 0.4
    )
    ax.imshow(canvas, cmap="gray_r", vmin=0, vmax=255, interpolation="nearest")
    cell_pt = width * points_per_pixel(figure, ax, canvas.shape)  # the gap stays clear
    for k, caption in enumerate(titles):
        x = (k % columns) * (width + gap) + width / 2
        y = (k // columns) * (height + band + gap) + band - 1
        text, size = fit_caption(caption, cell_pt, largest=8.0)
        ax.text(x, y, text, ha="center", va="bottom", fontsize=size)
    ax.axis("off")
    ax.set_title(title)
    return figure
