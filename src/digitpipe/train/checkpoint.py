"""The Lightning checkpoint of the exported epoch: read without unpickling, written byte-stable."""

from __future__ import annotations

import io
import os
import sys

import torch

from digitpipe.core.atomic import atomic_path

NET_PREFIX = "net."  # the LightningModule keeps the zoo network as ``self.net``


def read_checkpoint(path: str | os.PathLike) -> dict:
    """A Lightning checkpoint, loaded with ``weights_only=True``."""
    return torch.load(path, map_location="cpu", weights_only=True)


def network_weights(checkpoint: dict) -> dict[str, torch.Tensor]:
    """The zoo network's state dict inside a checkpoint."""
    return {
        key[len(NET_PREFIX) :]: value
        for key, value in checkpoint["state_dict"].items()
        if key.startswith(NET_PREFIX)
    }


def canonical(value: object) -> object:
    """``value`` rebuilt so that pickle writes it the same way however it came to be: every
    container new (none shared) and every string interned (each written once, then referred to).

    Pickle writes a second reference to the same object as a back-reference, and an equal but
    distinct object in full. A resumed training's optimizer state was read from a checkpoint, so
    its keys were distinct strings: its model.ckpt held the same values as an uninterrupted
    run's, in 64 more bytes ('step' written out again)."""
    if type(value) is str:  # not a subclass: sys.intern refuses those
        return sys.intern(value)
    if isinstance(value, dict):
        return type(value)((canonical(key), canonical(item)) for key, item in value.items())
    if type(value) in (list, tuple):  # not a named tuple, built from its fields
        return type(value)(canonical(item) for item in value)
    return value


def write_portable_checkpoint(checkpoint: dict, target: str | os.PathLike) -> None:
    """Write ``checkpoint`` without its callbacks' state (absolute paths, timings), in canonical
    form, so the same training gives the same bytes, resumed or not. Saved through a buffer:
    ``torch.save`` names the archive after the file, and the file here is a temporary one."""
    portable = canonical({key: value for key, value in checkpoint.items() if key != "callbacks"})
    buffer = io.BytesIO()
    torch.save(portable, buffer)
    with atomic_path(target) as tmp:
        tmp.write_bytes(buffer.getvalue())
