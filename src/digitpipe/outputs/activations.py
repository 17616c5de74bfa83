"""The activations stage's outputs: layer outputs of chosen test images, and their pictures."""

from __future__ import annotations

from pathlib import Path

from digitpipe.outputs import Declared, StageReport

ACTIVATIONS_REPORTS = Path("reports/activations")
TENSORS = ACTIVATIONS_REPORTS / "activations.safetensors"
MANIFEST = ACTIVATIONS_REPORTS / "manifest.json"
FEATURE_MAPS = ACTIVATIONS_REPORTS / "feature_maps.png"
FILTERS = ACTIVATIONS_REPORTS / "filters.png"
BARCODES = ACTIVATIONS_REPORTS / "barcodes.png"

DECLARED = Declared(outs=(TENSORS, MANIFEST), plots=(FEATURE_MAPS, FILTERS, BARCODES))


class Layer(StageReport):
    name: str
    kind: str
    shape: list[int]


class ActivationsManifest(StageReport):
    """reports/activations/manifest.json."""

    tensors: str
    layers: list[Layer]
    images: list[dict]
