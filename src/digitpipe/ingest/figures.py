"""The ingest stage's first look at the data: class distribution and sample images."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from digitpipe.dataset.images import ImageSet
from digitpipe.plotting import PAGE_INCHES, class_ticks, digit_grid

SAMPLES_PER_CLASS = 10
# Images in the whole grid: 47 classes of 10 made a picture a third of the report's length.
SAMPLE_IMAGES = 100
# The longest side a sample is drawn with: 100 400x400-pixel samples made a 5.4 GB figure.
THUMBNAIL_PIXELS = 56


def class_distribution_figure(summary: dict) -> Figure:
    """Grouped bars: images per class in each labelled split; at most PAGE_INCHES wide (so
    report.html shows it at full size), class names fitted to their slot (upright when long)."""
    names = summary["class_names"]
    splits = {name: s["per_class"] for name, s in summary["splits"].items() if s["per_class"]}
    width_in = min(PAGE_INCHES, max(6.0, 0.6 * len(names) + 2))
    figure, ax = plt.subplots(figsize=(width_in, 4.2), layout="constrained")
    width = 0.8 / len(splits)
    positions = np.arange(len(names))
    for i, (split, counts) in enumerate(splits.items()):
        ax.bar(
            positions + i * width - 0.4 + width / 2,
            [counts[n] for n in names],
            width,
            label=f"{split} ({sum(counts.values()):,})",
        )
    slot_pt = (width_in - 1.0) * 72 / len(names)  # less the y axis's labels
    class_ticks(ax.xaxis, names, slot_pt)
    ax.set_xlim(-0.6, len(names) - 0.4)
    ax.set_xlabel("class")
    ax.set_ylabel("images")
    ax.set_title("Images per class", loc="left")
    ax.legend(frameon=False, ncols=len(splits), loc="lower right", bbox_to_anchor=(1.0, 1.0))
    ax.spines[["top", "right"]].set_visible(False)
    return figure


def sample_images_figure(images: ImageSet, seed: int) -> Figure:
    """A grid of randomly chosen training images, class by class: up to SAMPLES_PER_CLASS of
    each, fewer with many classes (SAMPLE_IMAGES in all), a row holding whole classes."""
    rng = np.random.default_rng(seed)
    classes = len(images.class_names)
    per_class = max(1, min(SAMPLES_PER_CLASS, SAMPLE_IMAGES // classes))
    picks, titles = [], []
    for label, name in enumerate(images.class_names):
        rows = np.flatnonzero(images.labels == label)
        chosen = rng.choice(rows, size=min(per_class, len(rows)), replace=False)
        picks.extend(chosen)
        titles.extend([name] * len(chosen))
    columns = min(per_class * max(1, SAMPLES_PER_CLASS // per_class), max(1, len(picks)))
    picked = np.asarray(images.images[np.array(picks, dtype=np.int64)])
    step = -(-max(images.image_size) // THUMBNAIL_PIXELS)  # 1 (every pixel) up to 56x56
    return digit_grid(
        picked[:, ::step, ::step],
        titles,
        columns,
        f"Sample training images, {per_class} per class",
    )
