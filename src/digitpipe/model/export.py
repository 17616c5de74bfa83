"""The trained model on disk: safetensors weights plus a JSON spec to rebuild the network.

Loading never unpickles: weights come from safetensors, the spec from JSON. Loading is bounded:
model.json is checked against sane bounds, the network is first built without memory (on
PyTorch's meta device) and materialised only once the weights are known to fit it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import nn

from digitpipe.core.atomic import atomic_path, write_json
from digitpipe.core.config import MAX_TEST_TIME_SHIFT
from digitpipe.core.errors import DigitpipeError, excerpt
from digitpipe.core.files import UnreadableFile, cannot_read, check_regular, read_bounded
from digitpipe.dataset.images import are_class_names
from digitpipe.model.sizes import MIN_SIDE
from digitpipe.model.zoo import BUILDERS, build_model
from digitpipe.outputs.train import SPEC_FILE, WEIGHTS_FILE
from digitpipe.provenance import WEIGHTS_DIGEST_KEY, check_weights_digest

MAX_SPEC_BYTES = 1 << 20  # model.json holds a few hundred bytes
MAX_PIXELS = 4096 * 4096  # the most pixels a model's images may have (and predict decodes)
QUOTE_CHARS = 40  # a bad value is quoted up to this length


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild the network around its weights."""

    arch: str
    height: int
    width: int
    class_names: list[str]
    mean: float
    std: float
    test_time_shift: int = 0  # predictions average 1 + 4 moved copies (inference.py); 0: off

    def build(self) -> nn.Sequential:
        return build_model(
            self.arch, self.height, self.width, len(self.class_names), self.mean, self.std
        )


SPEC_KEYS = {field.name for field in fields(ModelSpec)}
# Keys with a default may be absent: the model.json of earlier versions lacks them.
OPTIONAL_KEYS = {field.name for field in fields(ModelSpec) if field.default is not MISSING}


def save_model(net: nn.Module, spec: ModelSpec, model_dir: str | os.PathLike) -> None:
    """Write ``model.safetensors`` and ``model.json`` (the spec and the weights' SHA-256) into
    ``model_dir`` atomically."""
    model_dir = Path(model_dir)
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in net.state_dict().items()}
    weights = save(state, metadata={"digitpipe": json.dumps(asdict(spec))})
    with atomic_path(model_dir / WEIGHTS_FILE) as tmp:
        # Written by Python, not safetensors' save_file: its SafetensorError hides a full disk's
        # OSError, which the stage reports as one message.
        tmp.write_bytes(weights)
    digest = hashlib.sha256(weights).hexdigest()
    write_json(model_dir / SPEC_FILE, asdict(spec) | {WEIGHTS_DIGEST_KEY: digest})


def load_model(model_dir: str | os.PathLike) -> tuple[nn.Sequential, ModelSpec]:
    """Rebuild the network from ``model_dir`` in eval mode, on the CPU; weights whose SHA-256
    is not the one model.json records are refused."""
    model_dir = Path(model_dir)
    spec, digest = read_model_json(model_dir / SPEC_FILE)
    state = read_weights(model_dir / WEIGHTS_FILE)
    with torch.device("meta"):  # shapes only: no memory for a network the weights do not fit
        net = spec.build()
    misfit = _misfit(net, state)
    if misfit:
        raise _unusable(
            model_dir / WEIGHTS_FILE,
            f"the weights do not fit the network model.json describes: {misfit}",
        )
    broken = next((name for name, tensor in state.items() if not tensor.isfinite().all()), None)
    if broken:
        raise _unusable(model_dir / WEIGHTS_FILE, f"tensor {broken!r} holds NaN or infinite values")
    check_weights_digest(model_dir / WEIGHTS_FILE, digest)  # after the faults it can name
    net = net.to_empty(device="cpu")
    net.load_state_dict(state)
    return net.eval(), spec


def _unusable(path: Path, problem: str) -> DigitpipeError:
    """The error for a model file that cannot be used, and what to do."""
    return DigitpipeError(
        f"{path}: cannot load the model ({problem}); run the train stage first (dvc repro train) "
        "or point to a folder holding a valid model.json and model.safetensors."
    )


def read_spec(path: Path) -> ModelSpec:
    """The spec in ``path`` (model.json), checked against sane bounds."""
    return read_model_json(path)[0]


def read_model_json(path: Path) -> tuple[ModelSpec, str | None]:
    """The spec in ``path`` (model.json), checked against sane bounds, and the SHA-256 of the
    weights it records (None in the model.json of earlier versions)."""
    try:
        raw = json.loads(read_bounded(path, MAX_SPEC_BYTES))
    except UnreadableFile as exc:
        raise _unusable(path, exc.problem) from exc
    except (ValueError, RecursionError) as exc:
        raise _unusable(path, f"not valid JSON: {exc}") from None
    digest = raw.pop(WEIGHTS_DIGEST_KEY, None) if isinstance(raw, dict) else None
    problem = _digest_problem(digest) or _spec_problem(raw)
    if problem:
        raise _unusable(path, problem)
    return ModelSpec(**raw), digest


def _digest_problem(digest: object) -> str | None:
    """A recorded weights digest that is not 64 lowercase hex digits."""
    if digest is None or (isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest)):
        return None
    return f"{WEIGHTS_DIGEST_KEY} must be 64 hex digits, not {excerpt(digest, QUOTE_CHARS)}"


def _spec_problem(raw: object) -> str | None:
    """What is wrong with a parsed model.json, or None."""
    if not isinstance(raw, dict):
        return "expected a JSON object"
    missing = sorted(SPEC_KEYS - OPTIONAL_KEYS - raw.keys())
    unknown = sorted(raw.keys() - SPEC_KEYS)
    if missing or unknown:
        return f"missing keys {missing}, unknown keys {unknown}"
    return (
        _size_problem(raw)
        or _classes_problem(raw["class_names"])
        or _stats_problem(raw)
        or _shift_problem(raw.get("test_time_shift", ModelSpec.test_time_shift))
    )


def _size_problem(raw: dict) -> str | None:
    """An unknown arch, or an image size it cannot take or that is absurd."""
    arch, height, width = raw["arch"], raw["height"], raw["width"]
    if not isinstance(arch, str) or arch not in BUILDERS:
        return f"unknown arch {excerpt(arch, QUOTE_CHARS)}; known: {', '.join(BUILDERS)}"
    if type(height) is not int or type(width) is not int:
        return (
            "height and width must be whole numbers, not "
            f"{excerpt(height, QUOTE_CHARS)}, {excerpt(width, QUOTE_CHARS)}"
        )
    if min(height, width) < MIN_SIDE[arch] or height * width > MAX_PIXELS:
        return (
            f"images of {height}x{width} pixels; {arch} takes at least {MIN_SIDE[arch]} pixels a "
            f"side and at most {MAX_PIXELS:,} pixels"
        )
    return None


def _classes_problem(names: object) -> str | None:
    """Class names that are not a non-empty list of distinct strings."""
    if not are_class_names(names):
        return f"class_names must be a list of distinct strings, not {excerpt(names, QUOTE_CHARS)}"
    return None


def _stats_problem(raw: dict) -> str | None:
    """A normalisation mean or std that is not a finite number (std: positive)."""
    for key in ("mean", "std"):
        value = raw[key]
        if type(value) not in (int, float) or not math.isfinite(value):
            return f"{key} must be a finite number, not {excerpt(value, QUOTE_CHARS)}"
    if raw["std"] <= 0:
        return f"std must be positive, not {excerpt(raw['std'], QUOTE_CHARS)}"
    return None


def _shift_problem(shift: object) -> str | None:
    """A test-time shift that is not a whole number of pixels in the allowed range."""
    if type(shift) is not int or not 0 <= shift <= MAX_TEST_TIME_SHIFT:
        return (
            f"test_time_shift must be a whole number of pixels from 0 to {MAX_TEST_TIME_SHIFT}, "
            f"not {excerpt(shift, QUOTE_CHARS)}"
        )
    return None


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors in ``path`` (model.safetensors), never unpickled."""
    try:
        check_regular(path)
        return load_file(str(path))
    except UnreadableFile as exc:
        raise _unusable(path, exc.problem) from exc
    except OSError as exc:
        raise _unusable(path, cannot_read(exc)) from exc
    except SafetensorError as exc:
        raise _unusable(path, f"not a complete safetensors file: {exc}") from None


def _misfit(net: nn.Module, state: dict[str, torch.Tensor]) -> str | None:
    """How the tensors of ``net`` and ``state`` differ in name or shape (how many, and the
    first), or None."""
    expected = {name: tuple(tensor.shape) for name, tensor in net.state_dict().items()}
    found = {name: tuple(tensor.shape) for name, tensor in state.items()}
    differ = sorted(
        name for name in expected.keys() | found.keys() if expected.get(name) != found.get(name)
    )
    if not differ:
        return None
    name = differ[0]
    return (
        f"{len(differ)} tensors differ, e.g. {name!r}: the network has "
        f"{expected.get(name, 'none')}, the weights {found.get(name, 'none')}"
    )
