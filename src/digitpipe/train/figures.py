"""Learning curves: loss and accuracy per epoch, train against validation."""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

EXPORTED = "#6e7781"  # the exported epoch's line: grey, behind the curves


def learning_curves_figure(rows: list[dict[str, float]], best_epoch: int) -> Figure:
    """Two panels, loss and accuracy, each with the train and validation curve; the exported
    ``best_epoch`` marked by a dashed line and named in the title (a note in the panel covered
    the curves or a tick label)."""
    epochs = [row["epoch"] for row in rows]
    best = rows[best_epoch - 1]
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.6), layout="constrained")
    for ax, metric, title in zip(axes, ("loss", "acc"), ("Loss", "Accuracy"), strict=True):
        for split, style in (("train", "-o"), ("val", "-s")):
            ax.plot(
                epochs,
                [row[f"{split}_{metric}"] for row in rows],
                style,
                markersize=4,
                label=f"{split}",
            )
        ax.axvline(best["epoch"], color=EXPORTED, linestyle="--", linewidth=1, zorder=0)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        # Whole epochs only: one epoch drew a 0.96-1.04 axis of fractional epochs.
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
        ax.ticklabel_format(axis="y", useOffset=False)  # "+0.4775" above the ticks hid one
        ax.grid(alpha=0.3)
        ax.spines[["top", "right"]].set_visible(False)
        ax.legend(frameon=False)
    figure.suptitle(
        f"exported (dashed): epoch {best['epoch']}, val loss {best['val_loss']:.4f}, "
        f"val accuracy {best['val_acc']:.4f}",
        fontsize=10,
    )
    return figure
