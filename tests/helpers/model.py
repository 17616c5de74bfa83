"""Saved models for the tests, and what a saved model predicts, worked out independently."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from digitpipe.model.export import ModelSpec, save_model


def untrained_model(folder: Path, arch: str = "softmax") -> Path:
    """An untrained 28x28 model of ``arch`` for 10 classes saved in ``folder``: for checks made
    before the network matters."""
    spec = ModelSpec(arch, 28, 28, [str(i) for i in range(10)], 33.3, 78.6)
    save_model(spec.build(), spec, folder)
    return folder


def model_probabilities(net, spec, images: np.ndarray) -> np.ndarray:
    """What a saved model predicts for (N, H, W) images, worked out here with numpy (float64):
    the network's softmax, averaged over each image and its four copies moved
    ``spec.test_time_shift`` pixels (edge pixels repeated into the opened space)."""
    shift, (height, width) = spec.test_time_shift, images.shape[1:]
    padded = np.pad(images.astype(np.float32), ((0, 0), (shift, shift), (shift, shift)), "edge")
    moves = [(0, 0), (0, -1), (0, 1), (-1, 0), (1, 0)] if shift else [(0, 0)]
    corners = [(shift * (1 + dy), shift * (1 + dx)) for dy, dx in moves]
    views = [padded[:, top : top + height, left : left + width] for top, left in corners]
    with torch.inference_mode():
        return np.mean(
            [
                torch.softmax(net(torch.from_numpy(view[:, None].copy())).double(), 1).numpy()
                for view in views
            ],
            axis=0,
        )
