"""ImageSet: images, labels and stable ids, the unit every stage passes around."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # only ingest makes them: the other stages do not import (or list) the module
    from digitpipe.dataset.stored import StoredImages


@dataclass(frozen=True)
class ImageSet:
    """``images`` is uint8 (N, H, W), in memory or on disk: the ingest stage's StoredImages, or
    a Parquet split's ``parquet.SplitPixels`` (which imports this module; indexed, it reads the
    rows asked for); ``labels`` int64 (N,) or None when unlabeled."""

    ids: np.ndarray
    images: np.ndarray | StoredImages
    labels: np.ndarray | None
    class_names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.images)

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.images.shape[1]), int(self.images.shape[2])

    def take(self, index: np.ndarray) -> ImageSet:
        """The rows at ``index``, in that order."""
        labels = None if self.labels is None else self.labels[index]
        return ImageSet(self.ids[index], self.images[index], labels, self.class_names)

    def class_counts(self) -> dict[str, int]:
        """Images per class name (all classes listed, zeros included)."""
        if self.labels is None:
            return {}
        counts = np.bincount(self.labels, minlength=len(self.class_names))
        return {name: int(n) for name, n in zip(self.class_names, counts, strict=True)}


def are_class_names(names: object) -> bool:
    """Whether ``names`` is a non-empty list of distinct strings, as class names are stored (in a
    split's metadata and in model.json)."""
    return (
        isinstance(names, list)
        and bool(names)
        and all(isinstance(name, str) for name in names)
        and len(set(names)) == len(names)
    )


def make_ids(prefix: str, count: int) -> np.ndarray:
    """Stable ids ``prefix-000000`` numbering the rows of a source file from 0."""
    width = max(6, len(str(max(count - 1, 0))))
    return np.array([f"{prefix}-{i:0{width}d}" for i in range(count)], dtype=object)


def concat(parts: Sequence[ImageSet]) -> ImageSet:
    """The rows of every labelled part, in order (same image size and classes)."""
    if len(parts) == 1:
        return parts[0]
    return ImageSet(
        np.concatenate([part.ids for part in parts]),
        _concat_images([part.images for part in parts]),
        np.concatenate([part.labels for part in parts]),
        parts[0].class_names,
    )


def _concat_images(parts: list[np.ndarray | StoredImages]) -> np.ndarray | StoredImages:
    if isinstance(parts[0], np.ndarray):
        return np.concatenate(parts)
    return parts[0].concat(parts)


INCOMING_PREFIX = "incoming/"  # ids of a drop-folder batch's images: incoming/<batch>-000000


def batch_of(image_id: str) -> str | None:
    """The drop-folder batch an image came from (``incoming/week1-000012`` -> ``week1``)."""
    if not image_id.startswith(INCOMING_PREFIX):
        return None
    return image_id[len(INCOMING_PREFIX) :].rsplit("-", 1)[0]
