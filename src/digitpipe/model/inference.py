"""Class probabilities of a trained network over images, batch by batch."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def predict_probabilities(net: nn.Module, images: np.ndarray, batch_size: int) -> np.ndarray:
    """Softmax probabilities (N, classes), float32, of N >= 1 images (N, H, W) of pixel values
    0..255 (uint8, or float as the served model takes them).

    Batch by batch under ``torch.inference_mode``; ``net`` is put in eval mode, channels-last.
    """
    net.eval().to(memory_format=torch.channels_last)
    batches = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            pixels = torch.from_numpy(images[start : start + batch_size, None].astype(np.float32))
            logits = net(pixels.contiguous(memory_format=torch.channels_last))
            batches.append(torch.softmax(logits, dim=1))
    return torch.cat(batches).numpy()
