"""Record every named layer's output with forward hooks."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

SOFTMAX = "softmax"


def layer_kind(module: nn.Module) -> str:
    """A short, human name for what a layer does."""
    kinds = {
        nn.Conv2d: "conv",
        nn.Linear: "dense",
        nn.Flatten: "flatten",
        nn.BatchNorm1d: "batchnorm",
        nn.BatchNorm2d: "batchnorm",
        nn.MaxPool2d: "pool",
        nn.AdaptiveAvgPool2d: "pool",
        nn.AdaptiveMaxPool2d: "pool",
        nn.ReLU: "activation",
        nn.LeakyReLU: "activation",
        nn.Tanh: "activation",
    }
    return next(
        (kind for cls, kind in kinds.items() if isinstance(module, cls)),
        type(module).__name__.lower(),
    )


@torch.inference_mode()
def record_activations(net: nn.Sequential, images: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
    """Each named layer's output for ``images`` (float pixels 0..255, (N, 1, H, W)), in order,
    followed by the class probabilities under the name ``softmax``."""
    outputs: OrderedDict[str, torch.Tensor] = OrderedDict()
    handles = [
        layer.register_forward_hook(
            lambda _module, _inputs, output, name=name: outputs.__setitem__(name, output.clone())
        )
        for name, layer in net.named_children()
    ]
    try:
        logits = net.eval()(images)
    finally:
        for handle in handles:
            handle.remove()
    outputs[SOFTMAX] = torch.softmax(logits, dim=1)
    return outputs


def layer_kinds(net: nn.Sequential) -> dict[str, str]:
    """Layer name -> kind, including the appended ``softmax``."""
    return {name: layer_kind(layer) for name, layer in net.named_children()} | {SOFTMAX: SOFTMAX}
