"""The activations stage: export every layer's output for chosen test images, and draw them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save
from torch import nn

from digitpipe.activations.figures import barcodes_figure, feature_maps_figure, filters_figure
from digitpipe.activations.hooks import SOFTMAX, layer_kinds, record_activations
from digitpipe.activations.selection import choose_images
from digitpipe.core.atomic import staged_outputs
from digitpipe.core.config import ActivationsParams, Params
from digitpipe.core.errors import DigitpipeError
from digitpipe.dataset.images import ImageSet
from digitpipe.dataset.parquet import open_split
from digitpipe.model.export import ModelSpec, load_model
from digitpipe.model.zoo import NORMALIZE
from digitpipe.outputs import activations as outputs
from digitpipe.outputs import write_report
from digitpipe.outputs.evaluate import WORST_CASES
from digitpipe.outputs.ingest import split_file
from digitpipe.outputs.train import MODEL_DIR
from digitpipe.plotting import save_figure
from digitpipe.tracking.store import check_tracking


def as_input(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W) -> the float (N, 1, H, W) pixels the models take."""
    return torch.from_numpy(images[:, None].astype(np.float32))


def barcode_layer(kinds: dict[str, str], activations: dict[str, torch.Tensor]) -> str:
    """The last layer with feature maps, else the last hidden dense output, else the logits.
    The input normalisation is not a feature layer, though its output has the image's shape."""
    names = [n for n in activations if n not in (SOFTMAX, NORMALIZE)]
    maps = [n for n in names if activations[n].ndim == 4]
    if maps:
        return maps[-1]
    hidden = [n for n in names[:-1] if activations[n].ndim == 2 and kinds[n] != "flatten"]
    return hidden[-1] if hidden else names[-1]


def pooled(values: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) -> channel means (N, C); (N, F) unchanged."""
    return (values.mean(dim=(2, 3)) if values.ndim == 4 else values).numpy()


def first_weights(net: nn.Sequential, height: int, width: int) -> tuple[str, np.ndarray]:
    """The first conv or dense layer's weights; dense rows are drawn as H x W templates."""
    for name, layer in net.named_children():
        if isinstance(layer, nn.Conv2d):
            return name, layer.weight.detach().numpy()
        if isinstance(layer, nn.Linear):
            return name, layer.weight.detach().numpy().reshape(-1, height, width)
    raise DigitpipeError(
        f"model {type(net).__name__} has no conv or dense layer whose filters could be drawn; "
        "the activations stage needs a zoo model (model.arch)."
    )


def barcode_sample(test: ImageSet, per_class: int) -> np.ndarray:
    """The first ``per_class`` test rows of each class."""
    return np.concatenate(
        [np.flatnonzero(test.labels == k)[:per_class] for k in range(len(test.class_names))]
    )


def build_manifest(
    spec: ModelSpec,
    test: ImageSet,
    reasons: dict[str, list[str]],
    rows: np.ndarray,
    activations: dict[str, torch.Tensor],
    kinds: dict[str, str],
) -> dict:
    """What the tensors file holds: the chosen images (with why) and each layer's shape."""
    predicted = activations[SOFTMAX].argmax(dim=1).numpy()
    return {
        "model": spec.arch,
        "tensors": outputs.TENSORS.name,
        "images": [
            {
                "image_id": image_id,
                "label": spec.class_names[int(test.labels[row])],
                "predicted": spec.class_names[int(guess)],
                "reasons": why,
            }
            for (image_id, why), row, guess in zip(reasons.items(), rows, predicted, strict=True)
        ],
        "layers": [
            {"name": name, "kind": kinds[name], "shape": list(values.shape)}
            for name, values in activations.items()
        ],
    }


def draw_pictures(
    net: nn.Sequential,
    spec: ModelSpec,
    test: ImageSet,
    reasons: dict[str, list[str]],
    rows: np.ndarray,
    activations: dict[str, torch.Tensor],
    settings: ActivationsParams,
    staging: Path,
) -> None:
    """feature_maps.png (one chosen image), filters.png and barcodes.png under ``staging``."""
    kinds = layer_kinds(net)
    panel = list(reasons).index(settings.panel_image or next(iter(reasons)))
    image_id = list(reasons)[panel]
    save_figure(
        feature_maps_figure(
            test.images[rows[panel]],
            {n: v[panel].numpy() for n, v in activations.items()},
            kinds,
            spec.class_names,
            f"What {spec.arch} sees: {image_id} ({'; '.join(reasons[image_id])})",
            settings.max_channels,
        ),
        staging / outputs.FEATURE_MAPS,
    )
    filter_layer, weights = first_weights(net, spec.height, spec.width)
    save_figure(filters_figure(weights, filter_layer), staging / outputs.FILTERS)
    sample = barcode_sample(test, settings.barcode_images)
    sample_activations = record_activations(net, as_input(test.images[sample]))
    layer = barcode_layer(kinds, sample_activations)
    features = sample_activations[layer]
    save_figure(
        barcodes_figure(
            pooled(features), test.labels[sample], spec.class_names, layer, features.ndim == 4
        ),
        staging / outputs.BARCODES,
    )


def run(params: Params, root: Path = Path(".")) -> dict:
    """Write the activations, their manifest and pictures under reports/activations/."""
    check_tracking(params.track, root)
    settings = params.activations
    net, spec = load_model(root / MODEL_DIR)
    test = open_split(root / split_file("test"))  # ids, labels; pixels when indexed
    reasons = choose_images(settings, root / WORST_CASES, test)
    row_of = {image_id: row for row, image_id in enumerate(test.ids)}
    rows = np.array([row_of[image_id] for image_id in reasons], dtype=np.int64)
    activations = record_activations(net, as_input(test.images[rows]))
    manifest = build_manifest(spec, test, reasons, rows, activations, layer_kinds(net))
    with staged_outputs(root, "activations", outputs.DECLARED.paths()) as staging:
        tensors = {name: values.contiguous() for name, values in activations.items()}
        (staging / outputs.ACTIVATIONS_REPORTS).mkdir(parents=True)
        # Bytes written by Python: a full disk raises OSError, not safetensors' own error.
        tensor_bytes = save(tensors, metadata={"image_ids": ",".join(reasons)})
        (staging / outputs.TENSORS).write_bytes(tensor_bytes)
        write_report(staging / outputs.MANIFEST, outputs.ActivationsManifest, manifest)
        draw_pictures(net, spec, test, reasons, rows, activations, settings, staging)
    if params.track.enabled:
        log_activations(params, root)
    return manifest


def log_activations(params: Params, root: Path) -> None:
    """The pictures and the manifest into the MLflow run of this pipeline state."""
    from digitpipe.tracking.runs import log_stage

    files = [root / path for path in (*outputs.DECLARED.plots, outputs.MANIFEST)]
    settings = params.activations.model_dump(mode="json")
    log_stage(params.track, root, "activations", settings, {"activations": files})
