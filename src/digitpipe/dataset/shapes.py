"""Pixel arrays from IDX files and pixel CSVs as uint8 images (N, H, W)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from digitpipe.core.errors import DigitpipeError
from digitpipe.dataset.checks import first_invalid, scaled_hint


def as_images(
    path: Path, array: np.ndarray, size: tuple[int, int] | None, *, exact: bool = True
) -> np.ndarray:
    """``array`` (N x H x W, N x H x W x 1, or N x P flat rows) as uint8 images (N, H, W).

    Flat rows take ``size`` (H, W) when it is given and ``exact``: P must then be H * W, and
    images with their own H x W must have that size (the ingest stage's data.image_size is a
    promise about the data). Otherwise they take ``size``
    if P fits it, else a square (the predict command's model size is only a preference, so
    other sizes reach its clear size check). Every value must be a whole number in 0..255;
    an empty array, another shape, or a P that fits no size is refused.
    """
    if array.ndim == 2:
        array = array.reshape(len(array), *_row_size(path, array.shape[1], size, exact))
    elif array.ndim == 4 and array.shape[3] == 1:
        array = array[..., 0]
    elif array.ndim != 3:
        raise DigitpipeError(
            f"{path}: IDX images must be N x H x W (or N x H x W x 1, or N x pixels); "
            f"this file has shape {array.shape}."
        )
    if not len(array):
        raise DigitpipeError(f"{path}: the file holds no images.")
    if not array.shape[1] or not array.shape[2]:
        raise DigitpipeError(
            f"{path}: the images are {array.shape[1]}x{array.shape[2]} pixels; an image needs "
            "at least one row and one column."
        )
    if exact and size is not None and tuple(array.shape[1:3]) != tuple(size):
        raise DigitpipeError(
            f"{path}: the images are {array.shape[1]}x{array.shape[2]} pixels, but "
            f"data.image_size is {size[0]}x{size[1]}; set data.image_size: null (it only "
            "shapes flat pixel rows) or to the images' size."
        )
    index = None if array.dtype == np.uint8 else first_invalid(array, (0, 255))
    if index is not None:
        raise DigitpipeError(
            f"{path}: pixel value {array[index].item()!r} in image {index[0]} is not a whole "
            f"number in 0..255; convert the images to 8-bit grayscale.{scaled_hint(array)}"
        )
    return array.astype(np.uint8, copy=False)


def _row_size(path: Path, count: int, size: tuple[int, int] | None, exact: bool) -> tuple[int, int]:
    """The (H, W) of flat rows of ``count`` pixels, by the rules of :func:`as_images`."""
    if size is not None and (exact or size[0] * size[1] == count):
        if size[0] * size[1] != count:
            raise DigitpipeError(
                f"{path}: wrong pixel count: {count} pixels per image, but data.image_size "
                f"{size[0]}x{size[1]} needs {size[0] * size[1]}."
            )
        return size
    side = math.isqrt(count)
    if side * side != count and size is None:
        raise DigitpipeError(
            f"{path}: {count} pixel columns is not a square number; set "
            "data.image_size: [height, width] for non-square images."
        )
    if side * side != count:
        raise DigitpipeError(
            f"{path}: {count} pixel columns is neither {size[0]}x{size[1]} "
            f"({size[0] * size[1]}) nor a square number, so the image size is unknown."
        )
    return side, side
