"""The smallest images each architecture of the zoo takes, without importing torch: the ingest
stage refuses images too small for model.arch before it writes anything, train again before it
builds the network."""

from __future__ import annotations

from digitpipe.core.errors import DigitpipeError

# The smallest height and width (pixels) each network takes: its convolutions and pools leave
# nothing below it. tests/test_zoo.py checks each value against the network.
MIN_SIDE: dict[str, int] = {
    "softmax": 1,
    "mlp": 1,
    "lenet": 16,
    "convnet3": 8,
    "tinycnn": 18,
    "bncnn": 8,
    "best": 8,
}


def check_image_size(arch: str, height: int, width: int) -> None:
    """Refuse images too small for ``arch``, naming the minimum and the architectures that fit."""
    need = MIN_SIDE[arch]
    if min(height, width) >= need:
        return
    fits = ", ".join(name for name, side in MIN_SIDE.items() if min(height, width) >= side)
    raise DigitpipeError(
        f"model.arch '{arch}' needs images of at least {need}x{need} pixels; these are "
        f"{height}x{width}. Choose an architecture that takes them: {fits}."
    )
