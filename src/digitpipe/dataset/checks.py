"""Value checks shared by the readers, the ingest stage and the predict command."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from digitpipe.core.errors import DigitpipeError


def first_invalid(values: np.ndarray, bounds: tuple[int, int] | None) -> tuple[int, ...] | None:
    """The index of the first value that is not a finite whole number within ``bounds``
    (inclusive; None: any whole number), or None when every value is."""
    bad = np.zeros(values.shape, bool)
    if values.dtype.kind == "f":
        bad |= ~np.isfinite(values) | (values != np.round(values))
    if bounds is not None:
        bad |= (values < bounds[0]) | (values > bounds[1])
    return tuple(int(i) for i in np.argwhere(bad)[0]) if bad.any() else None


def scaled_hint(pixels: np.ndarray) -> str:
    """For pixels refused as not whole numbers in 0..255: a sentence saying they look scaled to
    0..1 when every one is within 0..1 (MNIST as many libraries serve it), else ""."""
    return scaled_hint_between(pixels.min(), pixels.max()) if pixels.size else ""


def scaled_hint_between(low: float, high: float) -> str:
    """:func:`scaled_hint` for pixels whose least and greatest values are ``low`` and ``high``
    (NaN when any value is NaN)."""
    if low >= 0 and high <= 1:
        return (
            " Every value is within 0..1: the pixels look scaled to 0..1; multiply them by 255 "
            "and round to whole numbers."
        )
    return ""


def not_8bit(image: int, value: object, hint: str) -> str:
    """The words for a pixel value that is not a whole number in 0..255 (``hint``:
    :func:`scaled_hint`'s), shared by the readers, the predict command and the served model."""
    return (
        f"pixel value {value!r} in image {image} is not a whole number in 0..255; convert the "
        f"images to 8-bit grayscale.{hint}"
    )


def pixel_fault(pixels: np.ndarray) -> str | None:
    """Why images (N, ...) are not 8-bit grayscale (:func:`not_8bit`), or None when every value
    is a whole number in 0..255."""
    index = first_invalid(pixels, (0, 255))
    if index is None:
        return None
    return not_8bit(index[0], pixels[index].item(), scaled_hint(pixels))


def check_labels(
    path: Path, labels: np.ndarray, classes: int, owner: str, ids: Sequence[str] | None = None
) -> None:
    """Refuse a label that is not a class index 0..classes-1; ``owner`` says who sets the
    classes (``data.class_names``, ``the model``), ``ids`` names the images (default: position)."""
    index = first_invalid(labels, (0, classes - 1))
    if index is not None:
        row = index[0]
        value = labels[row].item()
        fault = "out of range" if float(value).is_integer() else "not a whole number"
        place = f"position {row}" if ids is None else f"image {ids[row]}"
        raise DigitpipeError(
            f"{path}: label {value} at {place} is {fault}: {owner} has {classes} classes, so "
            f"labels must be whole numbers 0..{classes - 1}."
        )
