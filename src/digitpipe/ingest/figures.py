"""The ingest stage's first look at the data: class distribution and sample images."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from digitpipe.dataset.images import ImageSet
from digitpipe.plotting import digit_grid

SAMPLES_PER_CLASS = 10
# The longest side a sample is drawn with: 100 400x400-pixel samples made a 5.4 GB figure.
THUMBNAIL_PIXELS = 56


def class_distribution_figure(summary: dict) -> Figure:
    """Grouped bars: images per class in each labelled split."""
    names = summary["class_names"]
    splits = {name: s["per_class"] for name, s in summary["splits"].items() if s["per_class"]}
    figure, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(names) + 2), 3.8), layout="constrained")
    width = 0.8 / len(splits)
    positions = np.arange(len(names))
    for i, (split, counts) in enumerate(splits.items()):
        ax.bar(
            positions + i * width - 0.4 + width / 2,
            [counts[n] for n in names],
            width,
            label=f"{split} ({sum(counts.values())})",
        )
    long_names = max(map(len, names)) > 3  # slanted, so that neighbours never run together
    ax.set_xticks(
        positions, names, rotation=40 if long_names else 0, ha="right" if long_names else "center"
    )
    ax.set_xlabel("class")
    ax.set_ylabel("images")
    ax.set_title("Images per class")
    ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.spines[["top", "right"]].set_visible(False)
    return figure


def sample_digits_figure(images: ImageSet, seed: int) -> Figure:
    """A grid with one row per class of randomly chosen training images."""
    rng = np.random.default_rng(seed)
    picks, titles = [], []
    for label, name in enumerate(images.class_names):
        rows = np.flatnonzero(images.labels == label)
        chosen = rng.choice(rows, size=min(SAMPLES_PER_CLASS, len(rows)), replace=False)
        picks.extend(chosen)
        titles.extend([name] * len(chosen))
    columns = min(SAMPLES_PER_CLASS, max(1, len(picks)))
    picked = np.asarray(images.images[np.array(picks, dtype=np.int64)])
    step = -(-max(images.image_size) // THUMBNAIL_PIXELS)  # 1 (every pixel) up to 56x56
    return digit_grid(
        picked[:, ::step, ::step],
        titles,
        columns,
        "Sample training images, one row per class",
    )
