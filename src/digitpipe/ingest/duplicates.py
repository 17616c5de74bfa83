"""Exact duplicate images, found by a digest of each image's pixels.

A test image copied into training or validation (from any source, the drop folder included)
makes the test accuracy a memory test: such copies are dropped before the split, and a drop-folder
batch made mostly of test images is refused. The summary counts what duplicates remain within
and across the splits.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np

from digitpipe.core.errors import DigitpipeError
from digitpipe.dataset.images import ImageSet
from digitpipe.dataset.stored import StoredImages, chunk_rows

# 64-bit BLAKE2b digests: 8 bytes an image, and among MNIST's 70,000 images the odds that two
# different images share one are about 70,000^2 / 2^65 = 1.3e-10.
DIGEST_BYTES = 8
# A batch more than half of whose images are test images is a copy of the test split, not new
# data: refused whole rather than quietly thinned.
MOSTLY = 0.5


def digests(images: np.ndarray | StoredImages) -> np.ndarray:
    """One uint64 digest per image of uint8 (N, H, W) pixels, hashed row by row; pixels kept on
    disk (ingest's StoredImages) are read a chunk at a time, never all at once."""
    height, width = images.shape[1:]
    step = chunk_rows(height * width)
    chunks = (
        images.chunks(step)
        if isinstance(images, StoredImages)
        else (images[start : start + step] for start in range(0, len(images), step))
    )
    joined = b"".join(
        hashlib.blake2b(row, digest_size=DIGEST_BYTES).digest()
        for chunk in chunks
        for row in np.ascontiguousarray(chunk).reshape(len(chunk), -1)
    )
    return np.frombuffer(joined, np.uint64)


@dataclass(frozen=True)
class Leak:
    """Images of one source file identical to test images, dropped from training."""

    file: str
    count: int

    def warning(self) -> str:
        return (
            f"{self.file}: dropped {self.count:,} images identical to test images from training "
            "and validation (trained on, they would inflate the test accuracy)."
        )


def without_test_images(
    images: ImageSet, test: np.ndarray, file: Path
) -> tuple[ImageSet, Leak | None]:
    """``images`` less those whose digest is in ``test`` (the test split's digests), and what
    was dropped from ``file``, if anything."""
    leaked = np.isin(digests(images.images), test)
    if not leaked.any():
        return images, None
    return images.take(np.flatnonzero(~leaked)), Leak(file.as_posix(), int(leaked.sum()))


def refuse_a_copy_of_the_test_split(leak: Leak | None, name: str, count: int, folder: Path) -> None:
    """Refuse drop-folder batch ``name`` (``count`` images) when most of it are test images."""
    if leak is not None and leak.count > MOSTLY * count:
        raise DigitpipeError(
            f"{leak.file}: {leak.count:,} of the {count:,} images of incoming batch {name!r} are "
            "identical to test images: the batch looks like a copy of the test split, and "
            "training on it would leak the test set into training. The batch is refused and "
            f"nothing was written; remove it from {folder.as_posix()}."
        )


def duplicate_counts(splits: dict[str, ImageSet], leaks: list[Leak]) -> dict | None:
    """Exact duplicates: per split, images that repeat an earlier one of that split; per pair of
    splits ``a/b``, images of ``a`` identical to one of ``b``; per source file, the images
    dropped as test images. None when there is none at all."""
    hashed = {name: digests(images.images) for name, images in splits.items()}
    within = {name: len(found) - len(np.unique(found)) for name, found in hashed.items()}
    across = {
        f"{a}/{b}": int(np.isin(hashed[a], hashed[b]).sum()) for a, b in combinations(hashed, 2)
    }
    if not leaks and not any(within.values()) and not any(across.values()):
        return None
    return {
        "within": within,
        "across": across,
        "dropped_as_test_images": {leak.file: leak.count for leak in leaks},
    }
