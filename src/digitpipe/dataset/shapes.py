"""Pixel arrays from IDX files and pixel CSVs as uint8 images (N, H, W)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from digitpipe.core.errors import DigitpipeError
from digitpipe.dataset.checks import first_invalid, not_8bit, scaled_hint, scaled_hint_between


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
    height, width = image_size(path, array.shape, size, exact=exact)
    array = array.reshape(len(array), height, width)
    index = None if array.dtype == np.uint8 else first_invalid(array, (0, 255))
    if index is not None:
        raise PixelError(path, index[0], array[index].item(), scaled_hint(array))
    return array.astype(np.uint8, copy=False)


def image_size(
    path: Path, shape: tuple[int, ...], size: tuple[int, int] | None, *, exact: bool = True
) -> tuple[int, int]:
    """The (H, W) of the images of an array of ``shape``, by the rules of :func:`as_images`
    (which refuses here whatever the shape alone decides)."""
    if len(shape) == 2:
        shape = (shape[0], *_row_size(path, shape[1], size, exact))
    elif len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    elif len(shape) != 3:
        raise DigitpipeError(
            f"{path}: IDX images must be N x H x W (or N x H x W x 1, or N x pixels); "
            f"this file has shape {tuple(shape)}."
        )
    if not shape[0]:
        raise DigitpipeError(f"{path}: the file holds no images.")
    if not shape[1] or not shape[2]:
        raise DigitpipeError(
            f"{path}: the images are {shape[1]}x{shape[2]} pixels; an image needs "
            "at least one row and one column."
        )
    if exact and size is not None and tuple(shape[1:3]) != tuple(size):
        raise DigitpipeError(
            f"{path}: the images are {shape[1]}x{shape[2]} pixels, but "
            f"data.image_size is {size[0]}x{size[1]}; set data.image_size: null (it only "
            "shapes flat pixel rows) or to the images' size."
        )
    return int(shape[1]), int(shape[2])


class PixelError(DigitpipeError):
    """A pixel value that is not a whole number in 0..255 (``hint``: :func:`scaled_hint`'s)."""

    def __init__(self, path: Path, image: int, value: object, hint: str) -> None:
        super().__init__(f"{path}: {not_8bit(image, value, hint)}")


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


class PixelCheck:
    """The value check of :func:`as_images` over an array given a chunk of images at a time:
    :meth:`uint8` converts each chunk, :meth:`check` then refuses the first bad value as
    :func:`as_images` would have refused it in the whole array."""

    def __init__(self, path: Path) -> None:
        self.path, self.images = path, 0
        self.bad: tuple[int, object] | None = None  # (image, value) of the first bad value
        self.low, self.high = math.inf, -math.inf

    def uint8(self, chunk: np.ndarray) -> np.ndarray:
        """``chunk`` (k, ...) as uint8 (zeros once a value is bad: :meth:`check` refuses it)."""
        if chunk.dtype != np.uint8 and chunk.size:
            index = None if self.bad else first_invalid(chunk, (0, 255))
            if index is not None:
                self.bad = (self.images + index[0], chunk[index].item())
            low, high = chunk.min(), chunk.max()  # NaN when any value is NaN
            self.low = low if np.isnan(low) else min(self.low, low)
            self.high = high if np.isnan(high) else max(self.high, high)
        self.images += len(chunk)
        if self.bad is not None:  # converting NaN would warn; the rows are refused anyway
            return np.zeros(chunk.shape, np.uint8)
        return chunk.astype(np.uint8, copy=False)

    def check(self) -> None:
        if self.bad is not None:
            image, value = self.bad
            raise PixelError(self.path, image, value, scaled_hint_between(self.low, self.high))
