"""The trained model on disk: safetensors weights plus a JSON spec to rebuild the network.

Loading never unpickles: weights come from safetensors, the spec from JSON.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from safetensors.torch import load_file, save_file
from torch import nn

from digitpipe.core.atomic import atomic_path, write_json
from digitpipe.core.errors import DigitpipeError
from digitpipe.core.paths import SPEC_FILE, WEIGHTS_FILE
from digitpipe.model.zoo import build_model


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild the network around its weights."""

    arch: str
    height: int
    width: int
    class_names: list[str]
    mean: float
    std: float

    def build(self) -> nn.Sequential:
        return build_model(
            self.arch, self.height, self.width, len(self.class_names), self.mean, self.std
        )


def save_model(net: nn.Module, spec: ModelSpec, model_dir: str | os.PathLike) -> None:
    """Write ``model.safetensors`` and ``model.json`` into ``model_dir`` atomically."""
    model_dir = Path(model_dir)
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in net.state_dict().items()}
    with atomic_path(model_dir / WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp), metadata={"digitpipe": json.dumps(asdict(spec))})
    write_json(model_dir / SPEC_FILE, asdict(spec))


def load_model(model_dir: str | os.PathLike) -> tuple[nn.Sequential, ModelSpec]:
    """Rebuild the network from ``model_dir`` in eval mode, on the CPU."""
    model_dir = Path(model_dir)
    try:
        spec = ModelSpec(**json.loads((model_dir / SPEC_FILE).read_text()))
        state = load_file(str(model_dir / WEIGHTS_FILE))
    except (OSError, ValueError, TypeError) as exc:
        raise DigitpipeError(
            f"{model_dir}: cannot load the model ({exc}); run the train stage first "
            "(dvc repro train) or point to a folder holding model.json and model.safetensors."
        ) from exc
    try:
        net = spec.build()
        net.load_state_dict(state)
    except (KeyError, RuntimeError) as exc:
        raise DigitpipeError(
            f"{model_dir}: the weights do not fit the network model.json describes ({exc}); "
            "retrain the model (dvc repro train)."
        ) from exc
    return net.eval(), spec
