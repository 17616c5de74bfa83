"""Learning curves: loss and accuracy per epoch, train against validation."""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.figure import Figure


def learning_curves_figure(rows: list[dict[str, float]], best_epoch: int) -> Figure:
    """Two panels, loss and accuracy, each with the train and validation curve; the exported
    ``best_epoch`` marked."""
    epochs = [row["epoch"] for row in rows]
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
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.spines[["top", "right"]].set_visible(False)
        ax.legend(frameon=False)
    best = rows[best_epoch - 1]
    axes[0].annotate(
        f"exported: val loss {best['val_loss']:.4f}, acc {best['val_acc']:.4f}",
        (best["epoch"], best["val_loss"]),
        textcoords="offset points",
        xytext=(-10, 25),
        ha="right",
        arrowprops={"arrowstyle": "->", "alpha": 0.6},
    )
    return figure
