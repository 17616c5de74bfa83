"""Pictures of what the network sees: feature maps, first-layer filters, class barcodes."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from digitpipe.activations.hooks import SOFTMAX
from digitpipe.plotting import PAGE_INCHES, class_ticks, mosaic

MAP_KINDS = ("conv", "activation", "pool", "batchnorm")
ROW_INCHES = 0.06  # the height of one image's barcode, up to BARCODES_INCHES in all
BARCODES_INCHES = 8.0  # 47 classes of 12 images drew 34 inches, a third of the report


def _to_gray(maps: np.ndarray) -> np.ndarray:
    """Scale each map to 0..255 on its own (a flat map stays mid-gray)."""
    low = maps.min(axis=(1, 2), keepdims=True)
    span = maps.max(axis=(1, 2), keepdims=True) - low
    scaled = np.where(span > 0, (maps - low) / np.where(span > 0, span, 1), 0.5)
    return (scaled * 255).astype(np.uint8)


def feature_maps_figure(
    image: np.ndarray,
    activations: dict[str, np.ndarray],
    kinds: dict[str, str],
    class_names: list[str],
    title: str,
    max_channels: int,
) -> Figure:
    """For one image: the input, every channel of each conv/activation/pool layer (one row per
    layer), each dense layer's output as a strip, and the class probabilities as bars."""
    maps = [(n, a) for n, a in activations.items() if a.ndim == 3 and kinds[n] in MAP_KINDS]
    strips = [(n, a) for n, a in activations.items() if a.ndim == 1 and kinds[n] == "dense"]
    rows = 1 + len(maps) + len(strips) + 1
    heights = [2.2] + [1.4] * len(maps) + [0.6] * len(strips) + [1.8]
    figure = plt.figure(figsize=(PAGE_INCHES, sum(heights) + 0.8), layout="constrained")
    axes = figure.subplots(rows, 1, gridspec_kw={"height_ratios": heights})
    axes[0].imshow(image, cmap="gray_r", vmin=0, vmax=255)
    axes[0].set_title("input", loc="left", fontsize=10)
    for ax, (name, values) in zip(axes[1 : 1 + len(maps)], maps, strict=True):
        shown = values[:max_channels]
        if shown.shape[1:] == (1, 1):  # one value per channel: a strip of values, not flat tiles
            ax.imshow(shown[None, :, 0, 0], cmap="magma", aspect="auto", interpolation="nearest")
        else:
            tiles = mosaic(_to_gray(shown), min(len(shown), 16), gap=1, band=0)
            ax.imshow(tiles, cmap="magma", interpolation="nearest")
        more = f", first {len(shown)} of {len(values)}" if len(values) > len(shown) else ""
        ax.set_title(
            f"{name} ({kinds[name]}, {len(values)} x {values.shape[1]} x {values.shape[2]}{more})",
            loc="left",
            fontsize=9,
        )
    for ax, (name, values) in zip(axes[1 + len(maps) : -1], strips, strict=True):
        ax.imshow(values[None, :], cmap="viridis", aspect="auto", interpolation="nearest")
        ax.set_title(f"{name} (dense, {len(values)} outputs)", loc="left", fontsize=9)
    for ax in axes[:-1]:
        ax.set_xticks([])
        ax.set_yticks([])
    probabilities = activations[SOFTMAX]
    bars = axes[-1].bar(range(len(class_names)), probabilities, color="#9aa5b1")
    class_ticks(axes[-1].xaxis, class_names, (PAGE_INCHES - 0.6) * 72 / len(class_names))
    axes[-1].set_xlim(-0.6, len(class_names) - 0.4)
    bars[int(probabilities.argmax())].set_color("#d62728")
    axes[-1].set_ylim(0, 1)
    axes[-1].set_title("softmax: class probabilities (red: predicted)", loc="left", fontsize=9)
    axes[-1].spines[["top", "right"]].set_visible(False)
    figure.suptitle(title)
    return figure


def filters_figure(weights: np.ndarray, layer: str) -> Figure:
    """First-layer filters (out, in=1, kh, kw) or dense templates (out, H, W) as a grid, drawn as
    one image with an index above each (a subplot per filter renders ten times slower)."""
    kernels = weights[:, 0] if weights.ndim == 4 else weights
    limit = float(np.abs(kernels).max()) or 1.0
    columns = min(len(kernels), 10)
    height, width = kernels.shape[1:]
    gap, band = max(1, width // 4), max(2, height // 2)
    covered = mosaic(np.ones(kernels.shape, bool), columns, gap, band)
    canvas = np.ma.masked_where(~covered, mosaic(kernels, columns, gap, band))  # masked: blank
    inches_per_pixel = 1.0 / (width + gap)
    figure, ax = plt.subplots(
        figsize=(canvas.shape[1] * inches_per_pixel, canvas.shape[0] * inches_per_pixel + 0.35),
        layout="constrained",
    )
    ax.imshow(canvas, cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
    for index in range(len(kernels)):
        x = (index % columns) * (width + gap) + (width - 1) / 2
        y = (index // columns) * (height + band + gap) + band - 0.5  # the filter's top edge
        ax.text(x, y, str(index), ha="center", va="bottom", fontsize=7)
    ax.axis("off")
    figure.suptitle(f"{layer}: first-layer weights (red positive, blue negative)")
    return figure


def barcodes_figure(
    vectors: np.ndarray, labels: np.ndarray, class_names: list[str], layer: str, pooled: bool
) -> Figure:
    """Feature vectors (``pooled``: channel means of feature maps) minus their mean, one row per
    image, grouped by class."""
    order = np.argsort(labels, kind="stable")
    centred = vectors[order] - vectors.mean(axis=0, keepdims=True)
    limit = float(np.abs(centred).max()) or 1.0
    height = min(ROW_INCHES * len(vectors), BARCODES_INCHES)
    figure, ax = plt.subplots(figsize=(PAGE_INCHES, height + 1.5), layout="constrained")
    ax.imshow(
        centred, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto", interpolation="nearest"
    )
    sorted_labels = labels[order]
    bounds = np.flatnonzero(np.diff(sorted_labels)) + 0.5
    for bound in bounds:
        ax.axhline(bound, color="black", linewidth=0.8)
    present = np.unique(sorted_labels)
    centres = [np.flatnonzero(sorted_labels == k).mean() for k in present]
    per_class_pt = height * 72 / len(present)
    class_ticks(ax.yaxis, [class_names[k] for k in present], per_class_pt, at=centres)
    ax.set_xlabel(f"feature of {layer}" + (" (pooled per channel)" if pooled else ""))
    ax.set_ylabel("class")
    features = "pooled features" if pooled else "features"
    ax.set_title(f"Barcodes: each image's {features} minus the average over all images")
    return figure
