"""A picture of one digit (PNG, JPEG, BMP, GIF, TIFF, WebP; any size or mode; one frame) as an
MNIST-style image.

The steps follow how MNIST itself was made, without a threshold:

1. grayscale, 0..1: 16-bit pictures keep their precision; transparent areas are filled with a
   background that contrasts with the visible pixels (dark ink: white, light ink: black);
2. invert when the background is light: when the median of the border pixels is above the middle
   of the picture's range, so the digit is light on dark as in MNIST;
3. subtract the background level (that border median) and crop to the bounding box of the ink:
   pixels above ``INK_FRACTION`` of the brightest one;
4. scale, anti-aliased and keeping the aspect ratio, so the longer side fits the 20x20 box of
   MNIST's 28x28 images (the same proportions, 20/28, for models of other sizes); stretch the
   brightest pixel to 255;
5. place it so its centre of mass is at the image centre (an integer shift, as MNIST did: MNIST's
   centres of mass average (14.0, 14.0) in pixel indices), keeping the whole digit inside.

Memory stays bounded: a picture above ``MAX_PIXELS`` is decoded at a reduced scale (JPEG) or
refused, judged by its header before any pixel is decoded.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from digitpipe.core.errors import DigitpipeError
from digitpipe.core.files import check_regular
from digitpipe.model.export import MAX_PIXELS

BOX_FRACTION = 20 / 28  # MNIST: the digit fits a 20x20 box inside the 28x28 image
INK_FRACTION = 0.05  # ink: brighter than this fraction of the brightest pixel (for the crop)
MIN_CONTRAST = 0.1  # ink this faint (fraction of full scale) or less: a blank picture
MAX_SIDE = math.isqrt(MAX_PIXELS)  # bigger pictures: JPEG decodes reduced, others are refused


def load_digit(path: Path, size: tuple[int, int]) -> np.ndarray:
    """The digit pictured in ``path`` as a uint8 (H, W) MNIST-style image of ``size``."""
    check_regular(path, "give the path of a picture file.")
    try:
        with own_pixel_cap(), Image.open(path) as picture:
            refuse_animation(path, picture)
            fit_pixel_cap(path, picture)
            picture.load()
            gray = grayscale(ImageOps.exif_transpose(picture))
    except (OSError, SyntaxError, ValueError) as exc:
        raise DigitpipeError(f"{path}: not a readable picture ({exc}).") from None
    digit = mnist_style(gray, size)
    if digit is None:
        raise DigitpipeError(f"{path}: nothing to classify: the picture is blank.")
    return digit


@contextmanager
def own_pixel_cap() -> Iterator[None]:
    """Pillow's own cap off while a picture opens: :func:`fit_pixel_cap` judges the size from
    the header before any pixel is decoded, and Pillow's cap (a warning above 89,478,485 pixels,
    an error in its own words above 178,956,970) would contradict the 4096x4096 documented."""
    cap = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = cap


# A camera's JPEG may hold more images (Pillow's MPO): its first is the photo.
FIRST_FRAME_FORMATS = ("MPO",)


def refuse_animation(path: Path, picture: Image.Image) -> None:
    """Refuse a picture of several frames (an animated GIF, PNG or WebP, a TIFF of several
    pages; read by content, whatever the suffix): which frame is meant is not for digitpipe to
    guess."""
    if picture.format not in FIRST_FRAME_FORMATS and getattr(picture, "is_animated", False):
        raise DigitpipeError(
            f"{path}: an animation of several frames; save the frame to classify as a picture of "
            "its own."
        )


def fit_pixel_cap(path: Path, picture: Image.Image) -> None:
    """Before decoding: have a picture above MAX_PIXELS decoded at a reduced scale (JPEG's
    1/2 to 1/8 draft modes), or refuse it when its format cannot do that."""
    width, height = picture.size
    if width * height <= MAX_PIXELS:
        return
    scale = math.sqrt(MAX_PIXELS / (width * height)) / 2  # draft gives 1x to 2x of this
    picture.draft(None, (max(1, int(width * scale)), max(1, int(height * scale))))
    if picture.size[0] * picture.size[1] > MAX_PIXELS:
        raise DigitpipeError(
            f"{path}: the picture is {width}x{height} pixels, more than the {MAX_PIXELS:,} "
            f"({MAX_SIDE}x{MAX_SIDE}) digitpipe decodes; scale it down (the model takes far fewer)."
        )


def grayscale(picture: Image.Image) -> np.ndarray:
    """Luminance in 0..1 as float32 (H, W), transparency filled in (see the module docstring)."""
    if picture.mode == "I" or picture.mode.startswith("I;16"):
        pixels = np.asarray(picture, np.float32)
        wide = picture.mode != "I" or pixels.max() > 255  # 32-bit "I" often holds 8-bit data
        return pixels / (65535 if wide else 255)
    if "A" not in picture.mode and "transparency" not in picture.info:
        return np.asarray(picture.convert("L"), np.float32) / 255
    rgba = picture.convert("RGBA")
    luminance = np.asarray(rgba.convert("L"), np.float32) / 255
    alpha = np.asarray(rgba.getchannel("A"), np.float32) / 255
    if alpha.min() == 1 or not alpha.any():
        return luminance
    background = 1.0 if np.average(luminance, weights=alpha) < 0.5 else 0.0
    return alpha * luminance + (1 - alpha) * background


def mnist_style(gray: np.ndarray, size: tuple[int, int]) -> np.ndarray | None:
    """A grayscale picture (0..1) as a uint8 MNIST-style image of ``size``; None when blank."""
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    background = float(np.median(border))
    if background > (gray.min() + gray.max()) / 2:
        gray, background = 1 - gray, 1 - background
    ink = np.clip(gray - background, 0, None)
    if ink.max() <= MIN_CONTRAST:
        return None
    rows = np.flatnonzero((ink > INK_FRACTION * ink.max()).any(axis=1))
    cols = np.flatnonzero((ink > INK_FRACTION * ink.max()).any(axis=0))
    digit = fit_box(ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1], size)
    return centre_by_mass(digit / digit.max(), size)


def fit_box(ink: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``ink`` resized (Lanczos, aspect ratio kept) so it just fits the digit box of ``size``."""
    box_h, box_w = (max(1, round(side * BOX_FRACTION)) for side in size)
    scale = min(box_h / ink.shape[0], box_w / ink.shape[1])
    width = min(box_w, max(1, round(ink.shape[1] * scale)))
    height = min(box_h, max(1, round(ink.shape[0] * scale)))
    resized = Image.fromarray(ink.astype(np.float32)).resize(
        (width, height), Image.Resampling.LANCZOS
    )
    return np.clip(np.asarray(resized), 0, None)


def centre_by_mass(digit: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``digit`` (0..1) pasted into a uint8 image of ``size`` with its centre of mass centred."""
    height, width = digit.shape
    top, left = (size[0] - height) // 2, (size[1] - width) // 2
    mass = digit.sum()
    centre_y = top + digit.sum(axis=1) @ np.arange(height) / mass
    centre_x = left + digit.sum(axis=0) @ np.arange(width) / mass
    top += int(np.clip(round(size[0] / 2 - centre_y), -top, size[0] - height - top))
    left += int(np.clip(round(size[1] / 2 - centre_x), -left, size[1] - width - left))
    image = np.zeros(size, np.uint8)
    image[top : top + height, left : left + width] = np.rint(digit * 255).astype(np.uint8)
    return image
