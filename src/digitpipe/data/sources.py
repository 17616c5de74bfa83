"""Turn a configured source (IDX pair or CSV) into a validated ImageSet."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from digitpipe.config import DataParams, Source
from digitpipe.data.csv import read_pixel_csv
from digitpipe.data.idx import RawFile, parse_idx, read_bytes
from digitpipe.data.images import ImageSet, make_ids
from digitpipe.errors import DigitpipeError


def load_source(
    source: Source, data: DataParams, root: Path, name: str, *, labelled: bool
) -> ImageSet:
    """Read, verify and validate one source; ``name`` prefixes the image ids (``train-000000``)."""
    if source.csv is not None:
        path = root / source.csv
        if source.csv in data.checksums:
            _verify_checksum(read_bytes(path), source.csv, data)
        table = read_pixel_csv(path, data.csv_label_column)
        if labelled and table.labels is None:
            raise DigitpipeError(
                f"{path}: no label column '{data.csv_label_column}' in the header; the "
                f"{name} split needs labels (set data.csv_label_column to the right name)."
            )
        images = _shape_images(path, table.pixels, data.image_size)
        labels = table.labels
    else:
        images, labels = _load_idx(source, data, root, name, labelled=labelled)
    if labels is not None:
        _check_labels(root / (source.labels or source.csv), labels, data.class_names)
    return ImageSet(make_ids(name, len(images)), images, labels, tuple(data.class_names))


def _load_idx(
    source: Source, data: DataParams, root: Path, name: str, *, labelled: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    path = root / source.images
    images = as_pixels(path, _read_verified(source.images, data, root))
    if images.ndim == 2:
        images = _shape_images(path, images, data.image_size)
    elif images.ndim == 4 and images.shape[3] == 1:
        images = images[..., 0]
    elif images.ndim != 3:
        raise DigitpipeError(
            f"{path}: IDX images must be N x H x W (or N x H x W x 1, or N x pixels); "
            f"this file has shape {images.shape}."
        )
    if source.labels is None:
        if labelled:
            raise DigitpipeError(
                f"{path}: the {name} split needs labels: add 'labels: <idx1 file>' to data.{name}."
            )
        return images, None
    label_path = root / source.labels
    labels = _read_verified(source.labels, data, root)
    if labels.ndim != 1:
        raise DigitpipeError(
            f"{label_path}: a label file must be 1-dimensional (idx1); it has shape {labels.shape}."
        )
    if len(labels) != len(images):
        raise DigitpipeError(
            f"{label_path}: {len(labels)} labels for {len(images)} images in {path}; "
            "the counts must match (is it the label file of another split?)."
        )
    return images, labels


def _read_verified(relative: Path, data: DataParams, root: Path) -> np.ndarray:
    raw = read_bytes(root / relative)
    if relative in data.checksums:
        _verify_checksum(raw, relative, data)
    return parse_idx(raw)


def _verify_checksum(raw: RawFile, relative: Path, data: DataParams) -> None:
    if raw.sha256 != data.checksums[relative]:
        raise DigitpipeError(
            f"{raw.path}: checksum mismatch: SHA-256 of the decompressed content is {raw.sha256}, "
            f"data.checksums expects {data.checksums[relative]}. The file is corrupt or not "
            "the one configured; restore it, or update the checksum if the change is intended."
        )


def as_pixels(path: Path, array: np.ndarray) -> np.ndarray:
    """Images as uint8, rejecting values that are not whole numbers in 0..255."""
    if array.dtype == np.uint8:
        return array
    bad = (array < 0) | (array > 255)
    if array.dtype.kind == "f":
        bad |= ~np.isfinite(array) | (array != np.round(array))
    if bad.any():
        value = array[tuple(np.argwhere(bad)[0])]
        raise DigitpipeError(
            f"{path}: pixel value {value!r} is not a whole number in 0..255; "
            "convert the images to 8-bit grayscale."
        )
    return array.astype(np.uint8)


def _shape_images(path: Path, flat: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """Reshape flat pixel rows (N, P) to (N, H, W) using data.image_size or a square count."""
    count = flat.shape[1]
    if size is None:
        side = math.isqrt(count)
        if side * side != count:
            raise DigitpipeError(
                f"{path}: {count} pixel columns is not a square number; set "
                "data.image_size: [height, width] for non-square images."
            )
        size = (side, side)
    if size[0] * size[1] != count:
        raise DigitpipeError(
            f"{path}: wrong pixel count: {count} pixels per image, but data.image_size "
            f"{size[0]}x{size[1]} needs {size[0] * size[1]}."
        )
    return flat.reshape(len(flat), *size)


def _check_labels(path: Path, labels: np.ndarray, class_names: list[str]) -> None:
    bad = np.flatnonzero((labels < 0) | (labels >= len(class_names)))
    if bad.size:
        raise DigitpipeError(
            f"{path}: label {labels[bad[0]]} at position {bad[0]} is out of range: "
            f"data.class_names has {len(class_names)} classes, so labels must be "
            f"0..{len(class_names) - 1}."
        )
