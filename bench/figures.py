"""Every report picture drawn from synthetic inputs, for 2, 10, 26 and 47 classes with short
and long class names, so that their legibility at the size report.html shows them can be
checked by eye (and by tests/test_figures.py, which asserts that no two labels overlap).

Run: `.venv/bin/python bench/figures.py [OUT]` (default /tmp/digitpipe-figures); it writes
OUT/<classes>-<short|long>/<picture>.png. No training, no data files: random images, random
probabilities and an untrained network.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from digitpipe.activations.figures import barcodes_figure, feature_maps_figure, filters_figure
from digitpipe.activations.hooks import layer_kinds, record_activations
from digitpipe.dataset.images import ImageSet
from digitpipe.evaluate.confusion import confusion_counts, confusion_figure
from digitpipe.evaluate.figures import probability_gallery
from digitpipe.evaluate.worst_cases import GALLERY_COLUMNS, TYPICAL_COLUMNS
from digitpipe.ingest.figures import class_distribution_figure, sample_images_figure
from digitpipe.model.zoo import build_model
from digitpipe.plotting import save_figure
from digitpipe.train.figures import learning_curves_figure

CLASS_COUNTS = (2, 10, 26, 47)
SHAPES = ("square", "triangle", "circle", "pentagon", "rounded rectangle", "five-pointed star")


def class_names(classes: int, long: bool) -> list[str]:
    """Digits for 10, letters for 26, EMNIST-like for 47; with ``long``, names up to 24
    characters, some without spaces (they must not run together)."""
    if long:
        return [f"{SHAPES[k % len(SHAPES)]}{'' if k % 2 else ' '}{k}" for k in range(classes)]
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabdefghnqrt"
    return list(alphabet[:classes]) if classes != 26 else [chr(65 + k) for k in range(26)]


def images_of(classes: int, names: list[str], per_class: int, rng) -> ImageSet:
    """Random 28x28 'images' (a bright blob) with ``per_class`` of each class."""
    labels = np.repeat(np.arange(classes), per_class)
    images = (rng.random((len(labels), 28, 28)) ** 4 * 255).astype(np.uint8)
    ids = np.array([f"train-{k:06d}" for k in range(len(labels))], dtype=object)
    return ImageSet(ids, images, labels, names)


def figures(classes: int, long: bool) -> Iterator[tuple[str, Callable[[], Figure]]]:
    """(name, a function drawing it) for every report picture."""
    rng = np.random.default_rng(classes)
    names = class_names(classes, long)
    train = images_of(classes, names, 12, rng)
    counts = {name: int(rng.integers(50, 2500)) for name in names}
    summary = {
        "class_names": names,
        "splits": {
            split: {"per_class": {n: c // share for n, c in counts.items()}}
            for split, share in (("train", 1), ("val", 6), ("test", 5))
        },
    }
    yield "class_distribution", lambda: class_distribution_figure(summary)
    yield "sample_images", lambda: sample_images_figure(train, seed=0)
    for epochs in (1, 12):
        rows = [
            {
                "epoch": e,
                "train_loss": 2.0 / e,
                "val_loss": 2.1 / e + 0.01 * e,
                "train_acc": 1 - 0.5 / e,
                "val_acc": 1 - 0.52 / e,
            }
            for e in range(1, epochs + 1)
        ]
        yield f"learning_curves_{epochs}", lambda rows=rows: learning_curves_figure(rows, 1)
    labels = np.repeat(np.arange(classes), 400 if classes < 20 else 120)
    wrong = rng.integers(0, classes, len(labels))
    predicted = np.where(rng.random(len(labels)) < 0.9, labels, wrong)
    matrix = confusion_counts(labels, predicted, classes)
    yield "confusion", lambda: confusion_figure(matrix, names, "Confusion matrix (test)")
    probabilities = rng.dirichlet(np.ones(classes) * 0.3, size=12)
    actual = rng.integers(0, classes, 12)
    captions = [
        f"test-{k:06d}  p={p.max():.2f}\n{names[a]} \u2192 {names[p.argmax()]}"
        for k, (a, p) in enumerate(zip(actual, probabilities, strict=True))
    ]
    title = (
        f"Most confused pair: actual {names[0]} predicted as {names[-1]} (12 images, all shown)"
        "\ngreen: actual class, red: predicted class"
    )
    yield (
        "most_confused_pair",
        lambda: probability_gallery(
            train.images[:12], probabilities, actual, captions, names, GALLERY_COLUMNS, title
        ),
    )
    shown = min(classes, 47)
    typical = rng.dirichlet(np.ones(classes) * 0.3, size=shown)
    yield (
        "typical_images",
        lambda: probability_gallery(
            train.images[:shown],
            typical,
            np.arange(shown),
            [f"test-{k:06d}  p={p.max():.2f}\n{names[k]}" for k, p in enumerate(typical)],
            names,
            min(TYPICAL_COLUMNS, shown),
            "Most typical test image of each class",
        ),
    )
    for arch in ("lenet", "mlp"):
        yield from network_figures(arch, train, names, rng)


def network_figures(
    arch: str, train: ImageSet, names: list[str], rng
) -> Iterator[tuple[str, Callable[[], Figure]]]:
    """The activations stage's pictures of an untrained ``arch``."""
    torch.manual_seed(0)
    net = build_model(arch, 28, 28, len(names), 33.0, 78.0).eval()
    kinds = layer_kinds(net)
    with torch.no_grad():
        activations = record_activations(
            net, torch.from_numpy(train.images[:40, None].astype(np.float32))
        )
    one = {name: values[0].numpy() for name, values in activations.items()}
    title = f"What {arch} sees: test-000000 (most confident mistake; {names[-1]} \u2192 {names[0]})"
    yield (
        f"feature_maps_{arch}",
        lambda: feature_maps_figure(train.images[0], one, kinds, names, title, 16),
    )
    first = next(layer for layer in net if hasattr(layer, "weight"))
    weights = first.weight.detach().numpy()
    if weights.ndim == 2:
        weights = weights.reshape(-1, 28, 28)
    yield f"filters_{arch}", lambda: filters_figure(weights, "first layer")
    vectors = rng.normal(size=(len(train), 32))
    layer = "dense1" if arch == "mlp" else "conv2"  # as the activations stage would name them
    yield (
        f"barcodes_{arch}",
        lambda: barcodes_figure(vectors, train.labels, names, layer, arch != "mlp"),
    )


def main(out: Path) -> None:
    for classes in CLASS_COUNTS:
        for long in (False, True):
            folder = out / f"{classes}-{'long' if long else 'short'}"
            folder.mkdir(parents=True, exist_ok=True)
            for name, draw in figures(classes, long):
                save_figure(draw(), folder / f"{name}.png")
    print(f"pictures in {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/digitpipe-figures"))
