"""Shared figure helpers (matplotlib, headless): digit grids and atomic PNG saving."""

from __future__ import annotations

import os
import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from digitpipe.core.atomic import atomic_path

# Class names and titles are drawn as written: "$x$" is not mathtext (a bad formula would raise).
matplotlib.rcParams["text.parse_math"] = False

PIXELS_PER_INCH = 32  # image grids: each image pixel is this small on the figure
CHAR_EM = 0.6  # the average width of a character, in font sizes (DejaVu Sans)
SMALLEST_CAPTION = 5.0  # captions shrink down to this size (points) to fit their cell, then wrap
CAPTION_LINES = 4  # lines a caption may wrap into


def fit_caption(text: str, width_pt: float, largest: float = 7.0) -> tuple[str, float]:
    """``text`` and a font size at which its lines fit ``width_pt`` points: the largest size up
    to ``largest`` that fits, else ``SMALLEST_CAPTION``, with long lines wrapped (at most
    ``CAPTION_LINES`` lines)."""
    lines = text.split("\n")
    large, small = largest, SMALLEST_CAPTION
    longest = max(len(line) for line in lines)
    size = max(small, min(large, width_pt / (CHAR_EM * max(longest, 1))))
    chars = int(width_pt / (CHAR_EM * size))
    wrapped = [part for line in lines for part in textwrap.wrap(line, chars) or [""]]
    if len(wrapped) > CAPTION_LINES:
        wrapped = wrapped[:CAPTION_LINES]
        wrapped[-1] = wrapped[-1][: chars - 1] + "\u2026"
    return "\n".join(wrapped), size


def points_per_pixel(figure: Figure, ax, shape: tuple[int, ...]) -> float:
    """How wide, in points, one pixel of an image of ``shape`` drawn to fill ``ax`` is (equal
    aspect: the tighter of the two directions decides)."""
    box = ax.get_position()
    inches = min(
        figure.get_figwidth() * box.width / shape[1], figure.get_figheight() * box.height / shape[0]
    )
    return inches * 72


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
    figure, ax = plt.subplots(
        figsize=(canvas.shape[1] / PIXELS_PER_INCH, canvas.shape[0] / PIXELS_PER_INCH + 0.4)
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
