"""Shared figure helpers (matplotlib, headless): digit grids and atomic PNG saving."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from digitpipe.core.atomic import atomic_path


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
    figure, ax = plt.subplots(figsize=(canvas.shape[1] / 32, canvas.shape[0] / 32 + 0.4))
    ax.imshow(canvas, cmap="gray_r", vmin=0, vmax=255, interpolation="nearest")
    for k, caption in enumerate(titles):
        x = (k % columns) * (width + gap) + width / 2
        y = (k // columns) * (height + band + gap) + band - 1
        ax.text(x, y, caption, ha="center", va="bottom", fontsize=8)
    ax.axis("off")
    ax.set_title(title)
    return figure
