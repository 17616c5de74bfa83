"""The predictions table of a labelled split: ids, labels, predicted class, probabilities."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from digitpipe.core.atomic import atomic_path
from digitpipe.dataset.images import ImageSet


def write_predictions(split: ImageSet, probabilities: np.ndarray, path: str | os.PathLike) -> None:
    """``image_id``, ``label``, ``predicted`` and one ``prob_<class>`` column per class."""
    columns = {
        "image_id": pa.array(split.ids, pa.string()),
        "label": pa.array(split.labels, pa.int16()),
        "predicted": pa.array(probabilities.argmax(axis=1), pa.int16()),
    }
    for k, name in enumerate(split.class_names):
        columns[f"prob_{name}"] = pa.array(probabilities[:, k], pa.float32())
    with atomic_path(path) as tmp:
        pq.write_table(pa.table(columns), tmp, compression="zstd")
