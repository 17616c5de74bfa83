"""Turn a configured source (IDX pair or CSV) into a validated ImageSet."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from digitpipe.core.config import DataParams, Source
from digitpipe.core.errors import DigitpipeError
from digitpipe.dataset.checks import check_labels
from digitpipe.dataset.idx import RawFile, parse_idx, read_bytes
from digitpipe.dataset.images import ImageSet, make_ids
from digitpipe.dataset.pixel_csv import read_pixel_csv
from digitpipe.dataset.shapes import as_images


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
        images = as_images(path, table.pixels, data.image_size)
        labels = table.labels
    else:
        images, labels = _load_idx(source, data, root, name, labelled=labelled)
    if labels is not None:
        path = root / (source.labels or source.csv)
        check_labels(path, labels, len(data.class_names), "data.class_names")
        labels = labels.astype(np.int64, copy=False)
    return ImageSet(make_ids(name, len(images)), images, labels, tuple(data.class_names))


def _load_idx(
    source: Source, data: DataParams, root: Path, name: str, *, labelled: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    path = root / source.images
    images = as_images(path, _read_verified(source.images, data, root), data.image_size)
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
