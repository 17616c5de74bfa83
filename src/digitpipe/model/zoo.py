"""The model zoo: each architecture as an ``nn.Sequential`` of named layers.

Every network takes raw pixel intensities (N, 1, H, W) as floats in 0..255, normalises them
with the training set's mean and standard deviation (its first layer, ``normalize``), and returns
logits (N, classes). Layer names are stable: exported activations refer to them.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import nn

Layers = OrderedDict[str, nn.Module]
NORMALIZE = "normalize"  # the first layer of every network


class Normalize(nn.Module):
    """(x / 255 - mean) / std with the training set's statistics, stored in the model."""

    def __init__(self, mean: float, std: float) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean))
        self.register_buffer("std", torch.tensor(std))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x / 255.0 - self.mean) / self.std


def softmax_regression(height: int, width: int, classes: int) -> Layers:
    """Multinomial logistic regression: one dense layer on the pixels."""
    return OrderedDict(flatten=nn.Flatten(), dense=nn.Linear(height * width, classes))


def mlp(height: int, width: int, classes: int) -> Layers:
    """One hidden layer of 128 ReLU units."""
    return OrderedDict(
        flatten=nn.Flatten(),
        dense1=nn.Linear(height * width, 128),
        relu1=nn.ReLU(),
        dense2=nn.Linear(128, classes),
    )


def lenet(height: int, width: int, classes: int) -> Layers:
    """LeNet: conv5x5x20 tanh maxpool, conv5x5x50 tanh maxpool, dense 500 tanh, dense."""
    features = OrderedDict(
        conv1=nn.Conv2d(1, 20, 5),
        tanh1=nn.Tanh(),
        pool1=nn.MaxPool2d(2),
        conv2=nn.Conv2d(20, 50, 5),
        tanh2=nn.Tanh(),
        pool2=nn.MaxPool2d(2),
        flatten=nn.Flatten(),
    )
    return features | OrderedDict(
        dense1=nn.Linear(_flat_size(features, height, width), 500),
        tanh3=nn.Tanh(),
        dense2=nn.Linear(500, classes),
    )


def convnet3(height: int, width: int, classes: int) -> Layers:
    """Three blocks of conv3x3 (16/32/32, same padding), ReLU and maxpool, then one dense layer."""
    features: Layers = OrderedDict()
    for block, (cin, cout) in enumerate([(1, 16), (16, 32), (32, 32)], start=1):
        features[f"conv{block}"] = nn.Conv2d(cin, cout, 3, padding=1)
        features[f"relu{block}"] = nn.ReLU()
        features[f"pool{block}"] = nn.MaxPool2d(2)
    features["flatten"] = nn.Flatten()
    features["dense"] = nn.Linear(_flat_size(features, height, width), classes)
    return features


def tinycnn(height: int, width: int, classes: int) -> Layers:
    """The ~19k-parameter CNN: conv5x5x20 pool, conv5x5x20, conv3x3x40, global average pool."""
    return OrderedDict(
        conv1=nn.Conv2d(1, 20, 5),
        lrelu1=nn.LeakyReLU(0.1),
        pool1=nn.MaxPool2d(2),
        conv2=nn.Conv2d(20, 20, 5),
        lrelu2=nn.LeakyReLU(0.1),
        conv3=nn.Conv2d(20, 40, 3),
        lrelu3=nn.LeakyReLU(0.1),
        gap=nn.AdaptiveAvgPool2d(1),
        flatten=nn.Flatten(),
        dense1=nn.Linear(40, 20),
        lrelu4=nn.LeakyReLU(0.1),
        dense2=nn.Linear(20, classes),
    )


def _bn_cnn(
    blocks: tuple[tuple[int, bool], ...], height: int, width: int, classes: int, hidden: int = 0
) -> Layers:
    """A batch-normalised CNN: blocks of conv (no bias), optional maxpool, batch norm, ReLU; then
    an optional hidden dense layer of ``hidden`` units (no bias, batch norm, ReLU); dense.

    ``blocks`` are (channels, pool) pairs. The first conv is a 6x6 stride-2 stem, which halves the
    image before anything else runs: the same receptive field as a space-to-depth step followed by
    a 3x3 conv, at about twice the CPU throughput of a full-resolution first block. The others
    are 3x3 "same" convs. Pooling before normalising runs batch norm and ReLU on a quarter of the
    pixels.
    """
    layers: Layers = OrderedDict()
    channels = 1
    for block, (out, pool) in enumerate(blocks, start=1):
        kernel, stride = (6, 2) if block == 1 else (3, 1)
        layers[f"conv{block}"] = nn.Conv2d(
            channels, out, kernel, stride=stride, padding=(kernel - stride) // 2, bias=False
        )
        if pool:
            layers[f"pool{block}"] = nn.MaxPool2d(2)
        layers[f"bn{block}"] = nn.BatchNorm2d(out)
        layers[f"relu{block}"] = nn.ReLU()
        channels = out
    layers["flatten"] = nn.Flatten()
    features = _flat_size(layers, height, width)
    if hidden:
        layers["hidden"] = nn.Linear(features, hidden, bias=False)
        layers["hidden_bn"] = nn.BatchNorm1d(hidden)
        layers["hidden_relu"] = nn.ReLU()
        features = hidden
    layers["dense"] = nn.Linear(features, classes)
    return layers


def bncnn(height: int, width: int, classes: int) -> Layers:
    """The default: a small batch-normalised CNN (62k parameters), fast on a CPU."""
    return _bn_cnn(((32, True), (64, False), (64, True)), height, width, classes)


def best(height: int, width: int, classes: int) -> Layers:
    """Accuracy first: keeps the stem's 14x14 output for a second conv, and a hidden dense layer
    of 512 units (505k parameters, most of them in that layer; it adds 9% to the multiply-adds)."""
    return _bn_cnn(((32, False), (48, True), (96, True)), height, width, classes, hidden=512)


GEOMETRY = ("kernel_size", "stride", "padding", "dilation")  # of convolutions and pools


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
    return value if isinstance(value, tuple) else (value, value)


def _flat_size(features: Layers, height: int, width: int) -> int:
    """Values per image after ``features``, from the geometry of its convolutions and max pools
    (the other layers keep the shape). Arithmetic, not a probe image: a network built on the
    meta device (model.export.load_model) would pay ~1 s for the meta kernels' first use."""
    channels, sides = 1, (height, width)
    for layer in features.values():
        if isinstance(layer, nn.Conv2d | nn.MaxPool2d):
            geometry = zip(*(_pair(getattr(layer, key)) for key in GEOMETRY), strict=True)
            sides = tuple(
                (side + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1
                for side, (kernel, stride, pad, dilation) in zip(sides, geometry, strict=True)
            )
        if isinstance(layer, nn.Conv2d):
            channels = layer.out_channels
    return channels * sides[0] * sides[1]


BUILDERS: dict[str, Callable[[int, int, int], Layers]] = {
    "softmax": softmax_regression,
    "mlp": mlp,
    "lenet": lenet,
    "convnet3": convnet3,
    "tinycnn": tinycnn,
    "bncnn": bncnn,
    "best": best,
}


def build_model(
    arch: str, height: int, width: int, classes: int, mean: float, std: float
) -> nn.Sequential:
    """Architecture ``arch`` for ``height`` x ``width`` images, normalising with mean/std."""
    layers = BUILDERS[arch](height, width, classes)
    return nn.Sequential(OrderedDict({NORMALIZE: Normalize(mean, std)}) | layers)


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
