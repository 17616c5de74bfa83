"""Class probabilities of a trained network over images, batch by batch."""

from __future__ import annotations

from collections.abc import Generator, Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def shifted_views(pixels: torch.Tensor, shift: int) -> list[torch.Tensor]:
    """The (N, C, H, W) batch and, when ``shift`` > 0, its copies moved ``shift`` pixels right,
    left, down and up; the edge rows and columns are repeated into the space a move opens."""
    if not shift:
        return [pixels]
    height, width = pixels.shape[-2:]
    padded = F.pad(pixels, (shift,) * 4, mode="replicate")
    corners = [(shift, shift), (shift, 0), (shift, 2 * shift), (0, shift), (2 * shift, shift)]
    return [padded[..., top : top + height, left : left + width] for top, left in corners]


def predict_probabilities(
    net: nn.Module, images: np.ndarray, batch_size: int, test_time_shift: int
) -> np.ndarray:
    """Softmax probabilities (N, classes), float32, of N >= 1 images (N, H, W) of pixel values
    0..255 (uint8, or float as the served model takes them).

    With ``test_time_shift`` > 0 (the model spec's), the mean probabilities over each image and
    its four copies moved that many pixels (test-time augmentation). Batch by batch under
    ``torch.inference_mode``; ``net`` is put in eval mode, channels-last.
    """
    return stream_probabilities(net, [images], len(images), batch_size, test_time_shift)


def stream_probabilities(
    net: nn.Module, parts: Iterable[np.ndarray], count: int, batch_size: int, test_time_shift: int
) -> np.ndarray:
    """:func:`predict_probabilities` of the ``count`` >= 1 images of ``parts`` (e.g. a split's
    row groups, read one at a time) in order, in the batches of their concatenation: the same
    figures, bit for bit, however the images are parted, with one part and one batch in memory.

    Each batch's probabilities are copied into one (count, classes) array made at the first: a
    small tensor kept per batch, between the batches' large temporaries, held glibc's heap
    from shrinking (evaluating 300,000 images peaked 300 to 600 MB higher, varying run to run).
    """
    net.eval().to(memory_format=torch.channels_last)
    result, done = None, 0
    with torch.inference_mode():
        for images in rebatched(parts, batch_size):
            pixels = torch.from_numpy(images[:, None].astype(np.float32))
            views = shifted_views(pixels, test_time_shift)
            probabilities = sum(
                torch.softmax(net(view.contiguous(memory_format=torch.channels_last)), dim=1)
                for view in views
            )
            if result is None:
                result = np.empty((count, probabilities.shape[1]), np.float32)
            result[done : done + len(images)] = (probabilities / len(views)).numpy()
            done += len(images)
    return result


def rebatched(parts: Iterable[np.ndarray], batch_size: int) -> Iterator[np.ndarray]:
    """The rows of ``parts`` in batches of ``batch_size`` (the last one shorter), across the
    parts' ends. Each batch is a copy, so neither a batch nor the rows short of one keep a part
    alive while the next part is read."""
    short = None  # rows of the parts so far, fewer than a batch
    for part in parts:
        short = yield from _cut(part, short, batch_size)
        del part  # not held while the next part is read
    if short is not None:
        yield short


def _cut(
    part: np.ndarray, short: np.ndarray | None, batch_size: int
) -> Generator[np.ndarray, None, np.ndarray | None]:
    """The batches of ``short`` then ``part``, as copies; returns the rows short of a batch."""
    start = 0
    if short is not None:
        start = min(batch_size - len(short), len(part))
        short = np.concatenate([short, part[:start]])
        if len(short) < batch_size:
            return short
        yield short
    end = start + (len(part) - start) // batch_size * batch_size
    for first in range(start, end, batch_size):
        yield part[first : first + batch_size].copy()
    return part[end:].copy() if end < len(part) else None
