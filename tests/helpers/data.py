"""Tiny real data: the embedded MNIST files, params built from the package's defaults, and small
IDX/CSV sources written into a test project."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from digitpipe.core.config import DataParams, Params
from digitpipe.dataset.idx import write_idx

REPO = Path(__file__).resolve().parents[2]
MNIST = REPO / "data" / "raw" / "mnist"
QUICK_TRAIN = {"max_epochs": 1, "batch_size": 32, "limit_batches": 3}


def default_params(data: dict, **sections: dict) -> dict:
    """A whole params mapping from the package's defaults (DVC needs every section), never from
    the working copy's params.yaml, so the tests hold whatever a user has set there."""
    return Params.model_validate({"data": data, **sections}).model_dump(mode="json")


def mnist_data() -> DataParams:
    """The embedded MNIST files (paths relative to the repo) as the data section, with the
    package's other data defaults."""
    folder = MNIST.relative_to(REPO)
    return DataParams.model_validate(
        {
            "train": {
                "images": folder / "train-images-idx3-ubyte.gz",
                "labels": folder / "train-labels-idx1-ubyte.gz",
            },
            "test": {
                "images": folder / "t10k-images-idx3-ubyte.gz",
                "labels": folder / "t10k-labels-idx1-ubyte.gz",
            },
        }
    )


def write_csv(path: Path, images: np.ndarray, labels: np.ndarray | None) -> Path:
    """A Kaggle-style CSV: optional `label`, then pixel0..pixelN-1."""
    flat = images.reshape(len(images), -1)
    header = ([] if labels is None else ["label"]) + [f"pixel{i}" for i in range(flat.shape[1])]
    rows = flat if labels is None else np.column_stack([labels, flat])
    with path.open("w") as handle:
        handle.write(",".join(header) + "\n")
        np.savetxt(handle, rows, fmt="%d", delimiter=",")
    return path


def write_tiny_project(folder: Path, mnist_train) -> Path:
    """600 train (gzip IDX) and 200 test (raw IDX) MNIST digits and a params.yaml for them,
    tracking off, written into ``folder``."""
    images, labels = mnist_train
    raw = folder / "data" / "raw"
    write_idx(images[:600], raw / "train-images.gz", compress=True)
    write_idx(labels[:600], raw / "train-labels.gz", compress=True)
    write_idx(images[600:800], raw / "test-images", compress=False)
    write_idx(labels[600:800], raw / "test-labels", compress=False)
    params = default_params(
        {
            "train": {"images": "data/raw/train-images.gz", "labels": "data/raw/train-labels.gz"},
            "test": {"images": "data/raw/test-images", "labels": "data/raw/test-labels"},
        },
        track={"enabled": False},  # tracking tests turn it on
        runtime={"progress": "none"},
    )
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return folder
