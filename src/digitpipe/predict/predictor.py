"""A trained model ready to predict: loaded without unpickling, checked against its inputs.

A model comes from a train-stage folder (:meth:`Predictor.from_dir`) or from the MLflow model
registry (:meth:`Predictor.from_uri`), which serves the same safetensors weights.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import nn

from digitpipe.core.config import TrackParams
from digitpipe.core.errors import DigitpipeError
from digitpipe.dataset.checks import check_labels
from digitpipe.model.export import ModelSpec, load_model
from digitpipe.model.inference import stream_probabilities
from digitpipe.predict.inputs import Batch
from digitpipe.tracking.registry import download_weights
from digitpipe.tracking.store import tracking_uri

SCALE_FACTOR = 3.0  # a mean pixel this many times above or below the training mean is suspect
SCALE_CHECK_IMAGES = 20  # fewer are no sample: one thin "1" has a quarter of the mean ink
BATCH_SIZE = 1000


@dataclass(frozen=True)
class Predictor:
    """A network in eval mode and the spec it was trained with (image size, class names)."""

    net: nn.Module
    spec: ModelSpec

    @classmethod
    def from_dir(cls, model_dir: Path) -> Predictor:
        """The model saved by the train stage in ``model_dir`` (safetensors + JSON)."""
        return cls(*load_model(model_dir))

    @classmethod
    def from_uri(cls, uri: str, track: TrackParams, root: Path) -> Predictor:
        """A registered model (``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``) from the
        tracking store that ``track`` (or $MLFLOW_TRACKING_URI) names for the project at
        ``root``."""
        with tempfile.TemporaryDirectory() as folder:  # the weights are in memory once loaded
            return cls.from_dir(download_weights(uri, tracking_uri(track, root), Path(folder)))

    @property
    def image_size(self) -> tuple[int, int]:
        return self.spec.height, self.spec.width

    def check(self, batch: Batch) -> None:
        """Refuse a batch whose image size or labels do not fit this model."""
        height, width = batch.images.shape[1:]
        if (height, width) != self.image_size:
            raise DigitpipeError(
                f"{batch.source}: images are {height}x{width} ({height * width} pixels) but the "
                f"model takes {self.spec.height}x{self.spec.width} "
                f"({self.spec.height * self.spec.width} pixels); use a model trained on "
                f"{height}x{width} images, or give the images as pictures (PNG, JPEG), "
                "which are resized to fit."
            )
        if batch.labels is not None:
            classes = len(self.spec.class_names)
            check_labels(batch.source, batch.labels, classes, "the model", batch.ids)

    def scale_warning(self, batch: Batch) -> str | None:
        """A warning when a CSV or IDX batch of SCALE_CHECK_IMAGES or more has a mean pixel far
        (beyond SCALE_FACTOR either way) from the training images': pixels scaled 0..1 or 0..15,
        or dark ink on light paper, would be predicted silently wrong (pictures are prepared)."""
        if batch.kind == "pictures" or len(batch.images) < SCALE_CHECK_IMAGES:
            return None
        mean, trained = float(batch.images.mean()) / 255, self.spec.mean
        if trained / SCALE_FACTOR <= mean <= trained * SCALE_FACTOR:
            return None
        return (
            f"{batch.source}: the mean pixel is {mean * 255:.1f} of 255, the training images' "
            f"was {trained * 255:.1f}; predictions will be wrong unless the pixels are 0..255 "
            "with the ink as the training images had it (MNIST: light ink on black)."
        )

    def probabilities(self, *parts: np.ndarray) -> np.ndarray:
        """Class probabilities (N, classes) of the uint8 images (n, H, W) of the model's size in
        ``parts``, in order, without concatenating them first (a second copy of every pixel:
        235 MB for 300,000 28x28 images)."""
        count, shift = sum(map(len, parts)), self.spec.test_time_shift
        return stream_probabilities(self.net, parts, count, BATCH_SIZE, shift)
