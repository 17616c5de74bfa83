"""Class probabilities of a trained network over a split, and the predictions table."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import nn

from digitpipe.atomic import atomic_path
from digitpipe.data.images import ImageSet


def predict_probabilities(net: nn.Module, images: np.ndarray, batch_size: int) -> np.ndarray:
    """Softmax probabilities (N, classes), float32, of N >= 1 uint8 images (N, H, W).

    Batch by batch under ``torch.inference_mode``; ``net`` is put in eval mode, channels-last.
    """
    net.eval().to(memory_format=torch.channels_last)
    batches = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            pixels = torch.from_numpy(images[start : start + batch_size, None].astype(np.float32))
            logits = net(pixels.contiguous(memory_format=torch.channels_last))
            batches.append(torch.softmax(logits, dim=1))
    return torch.cat(batches).numpy()


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
