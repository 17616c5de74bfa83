"""The INPUT arguments of `digitpipe predict` as batches of images, with ids and any labels.

Each argument is one of:

- a picture (.png, .jpg, .jpeg, .bmp, .gif, .tif, .tiff, .webp): made MNIST-style at the
  model's size (:mod:`digitpipe.predict.images`); id: the file's path;
- a folder: every picture below it, recursively, sorted by path (other files are ignored);
- a CSV (.csv) of pixel rows in the Kaggle test.csv layout (a header, pixel0..pixelN-1); a
  ``label`` column, if present, is kept to report accuracy; id: the 1-based data row number,
  which is Kaggle's ImageId;
- anything else: an IDX image file (gzip or raw; N x H x W, N x H x W x 1 or N x pixels), labels
  are not read; id: the 0-based index of the image in the file.

Flat pixel rows take the model's height x width when the count matches, else a square if they
make one, else the file is refused (:func:`digitpipe.dataset.shapes.as_images`); the predictor
refuses images whose size is not the model's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Literal, TypeVar

import numpy as np

from digitpipe.core.errors import DigitpipeError
from digitpipe.dataset.idx import NotIdxError, parse_idx, read_bytes
from digitpipe.dataset.pixel_csv import read_pixel_csv
from digitpipe.dataset.shapes import as_images
from digitpipe.predict.images import load_digit

PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
LABEL_COLUMN = "label"
T = TypeVar("T")


@dataclass(frozen=True)
class Batch:
    """The images of one INPUT argument, in order: uint8 (N, H, W), ids, int64 labels or None."""

    source: Path
    kind: Literal["pictures", "csv", "idx"]
    ids: list[str]
    images: np.ndarray
    labels: np.ndarray | None = None


@dataclass(frozen=True)
class Inputs:
    """What was read (one batch per readable argument) and a message per skipped file."""

    batches: list[Batch]
    skipped: list[str]


def read_inputs(
    paths: list[Path], size: tuple[int, int], *, strict: bool, label_column: str = LABEL_COLUMN
) -> Inputs:
    """Read every INPUT argument; pictures are made ``size``; a CSV's ``label_column`` holds
    labels (as data.csv_label_column does for ingest); bad files are skipped or raise."""
    reader = Reader(size, strict, label_column)
    batches = [reader.attempt(reader.argument, path) for path in paths]
    return Inputs([batch for batch in batches if batch is not None], reader.skipped)


@dataclass
class Reader:
    """Reads INPUT arguments for a model of ``size``, noting bad files in ``skipped``."""

    size: tuple[int, int]
    strict: bool  # raise at the first bad file instead
    label_column: str = LABEL_COLUMN
    skipped: list[str] = field(default_factory=list)

    def attempt(self, read: Callable[[Path], T], path: Path) -> T | None:
        """``read(path)``; on a DigitpipeError: raise if strict, else note it and return None."""
        try:
            return read(path)
        except DigitpipeError as exc:
            if self.strict:
                raise
            self.skipped.append(str(exc))
            return None

    def argument(self, path: Path) -> Batch | None:
        """One INPUT argument, by kind (see the module docstring); None: only bad pictures."""
        if not path.exists():
            raise DigitpipeError(f"{path}: no such file or folder.")
        if path.is_dir():
            return self.folder(path)
        if path.suffix.lower() in PICTURE_SUFFIXES:
            return Batch(path, "pictures", [str(path)], load_digit(path, self.size)[None])
        if path.suffix.lower() == ".csv":
            return read_csv(path, self.size, self.label_column)
        return read_idx_images(path, self.size)

    def folder(self, folder: Path) -> Batch | None:
        """Every picture below ``folder``, skipping (or raising at) unreadable ones: a broken
        link or a device named like a picture is reported, not passed over in silence."""
        files = sorted(
            path
            for path in folder.rglob("*")
            if path.suffix.lower() in PICTURE_SUFFIXES and not path.is_dir()
        )
        if not files:
            raise DigitpipeError(
                f"{folder}: no pictures ({', '.join(PICTURE_SUFFIXES)}) in this folder."
            )
        ids, images = [], []
        for path in files:
            digit = self.attempt(partial(load_digit, size=self.size), path)
            if digit is not None:
                ids.append(str(path))
                images.append(digit)
        return Batch(folder, "pictures", ids, np.stack(images)) if images else None


def read_csv(path: Path, size: tuple[int, int], label_column: str = LABEL_COLUMN) -> Batch:
    """A Kaggle-layout pixel CSV; ids are 1-based row numbers."""
    table = read_pixel_csv(path, label_column)
    ids = [str(row) for row in range(1, len(table.pixels) + 1)]
    images = as_images(path, table.pixels, size, exact=False)
    return Batch(path, "csv", ids, images, table.labels)


def read_idx_images(path: Path, size: tuple[int, int]) -> Batch:
    """An IDX file of images; ids are 0-based indexes."""
    try:
        raw = read_bytes(path, "idx")
    except NotIdxError:
        raise DigitpipeError(
            f"{path}: not a picture ({', '.join(PICTURE_SUFFIXES)}), a pixel CSV (.csv) "
            "or an IDX file."
        ) from None
    images = as_images(path, parse_idx(raw), size, exact=False)
    return Batch(path, "idx", [str(index) for index in range(len(images))], images)
