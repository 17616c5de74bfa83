"""Class probabilities of a trained network over images, batch by batch."""

from __future__ import annotations

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
    net.eval().to(memory_format=torch.channels_last)
    batches = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            pixels = torch.from_numpy(images[start : start + batch_size, None].astype(np.float32))
            views = shifted_views(pixels, test_time_shift)
            probabilities = sum(
                torch.softmax(net(view.contiguous(memory_format=torch.channels_last)), dim=1)
                for view in views
            )
            batches.append(probabilities / len(views))
    return torch.cat(batches).numpy()
