"""The Lightning checkpoint of the exported epoch: read without unpickling, written byte-stable."""

from __future__ import annotations

import io
import os
import sys

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

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
    save_beside(portable, target)


def save_beside(checkpoint: dict, target: str | os.PathLike) -> None:
    """``torch.save`` into a temporary file beside ``target``, renamed onto it: whole or not at
    all. Through a buffer: ``torch.save`` names the archive after the file, a temporary one."""
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    with atomic_path(target) as tmp:
        tmp.write_bytes(buffer.getbuffer())


class CheckpointsBeside(TorchCheckpointIO):
    """Lightning's checkpoint files, each written by :func:`save_beside`. Lightning's own write
    goes through a file in $TMPDIR moved into place, a copy when $TMPDIR is on another file
    system (a tmpfs /tmp): a reader, or a crash, met half a `last.ckpt`, and a full /tmp failed
    the save with room beside it."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError("digitpipe's checkpoints take no storage_options")
        save_beside(checkpoint, path)
