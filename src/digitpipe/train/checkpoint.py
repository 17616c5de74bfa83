"""The Lightning checkpoint of the exported epoch: read without unpickling, written byte-stable."""

from __future__ import annotations

import io
import os

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


def write_portable_checkpoint(checkpoint: dict, target: str | os.PathLike) -> None:
    """Write ``checkpoint`` without its callbacks' state (absolute paths, timings), so the same
    training gives the same bytes. Saved through a buffer: ``torch.save`` names the archive
    after the file, and the file here is a temporary one."""
    portable = {key: value for key, value in checkpoint.items() if key != "callbacks"}
    buffer = io.BytesIO()
    torch.save(portable, buffer)
    with atomic_path(target) as tmp:
        tmp.write_bytes(buffer.getvalue())
