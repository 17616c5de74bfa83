"""The model `train` logs to MLflow: a pyfunc, logged as code (this file; nothing is pickled),
that rebuilds the network from the run's safetensors weights and model.json with
digitpipe.model.export.load_model and answers each image with its label, that label's
probability and the probability of every class.

Input: N images as pixel values 0..255 (whole numbers, as `digitpipe predict` takes them; 0..1
is refused with a hint to scale), shaped [N,H,W], [N,H*W] or [N,1,H,W] (a numpy
array; `mlflow models serve` reads `{"inputs": [...]}` into one), or a DataFrame of N rows x H*W
columns (`{"dataframe_split": ...}`). Anything else is refused with a short message that names
the expected shapes and never repeats the input (HTTP 400 from the scoring server).

The signature declares the outputs only. No input schema accepts these layouts together: MLflow
checks a tensor spec's number of dimensions, and a DataFrame's column count, against it, and a
pixel-per-column schema makes `{"inputs": [N,H,W]}` fail. Those checks run before `predict` and
their errors echo the whole request, so the shapes are checked here instead; the input example
([N,H,W]) and the model's metadata (`input`) document them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.exceptions import INVALID_PARAMETER_VALUE, MlflowException
from mlflow.models import ModelSignature, set_model
from mlflow.types import ColSpec, Schema

from digitpipe.dataset.checks import pixel_fault
from digitpipe.model.export import ModelSpec, load_model
from digitpipe.model.inference import predict_probabilities

MODEL_ARTIFACT = "model"  # the folder holding model.safetensors and model.json
BATCH = 512


class InputError(MlflowException):
    """A refused request: HTTP 400 from `mlflow models serve`, with this message only.

    The scoring server prefixes the message of any MlflowException raised by ``predict`` with
    the whole input ("Failed to predict data '...'"); this one keeps its own message."""

    def __init__(self, message: str) -> None:
        self._short = message
        super().__init__(message, error_code=INVALID_PARAMETER_VALUE)

    @property
    def message(self) -> str:
        return self._short

    @message.setter
    def message(self, value: str) -> None:  # the scoring server's rewrite is dropped
        pass


def expected_shapes(spec: ModelSpec) -> str:
    h, w = spec.height, spec.width
    return (
        f"expected N images of whole-number pixel values 0..255 as [N,{h},{w}], [N,{h * w}] or "
        f"[N,1,{h},{w}] (a DataFrame: N rows x {h * w} columns)"
    )


def as_images(model_input: Any, spec: ModelSpec) -> np.ndarray:
    """``model_input`` as a float32 array [N,1,H,W]; raise InputError (never echoing the input)
    unless it is N >= 1 images in one of the accepted layouts with whole numbers in 0..255."""
    h, w = spec.height, spec.width
    if isinstance(model_input, pd.DataFrame):
        model_input = model_input.to_numpy()
    try:
        images = np.asarray(model_input, dtype=np.float64)  # the values as sent, for the check
    except (TypeError, ValueError):
        raise InputError(f"non-numeric or ragged input; {expected_shapes(spec)}.") from None
    shape = images.shape
    if len(shape) < 2 or shape[0] < 1 or shape[1:] not in ((h, w), (h * w,), (1, h, w)):
        dims = ",".join(map(str, shape[:6])) + (",..." if len(shape) > 6 else "")
        raise InputError(f"input of shape [{dims}]; {expected_shapes(spec)}.")
    fault = pixel_fault(images)  # `digitpipe predict` refuses the same, in the same words
    if fault is not None:
        raise InputError(fault)
    return images.reshape(len(images), 1, h, w).astype(np.float32)


def prediction_table(probabilities: np.ndarray, class_names: list[str]) -> pd.DataFrame:
    """One row per image: ``label``, ``probability`` (of that label), ``prob_<class>``."""
    best = probabilities.argmax(axis=1)
    table = pd.DataFrame(
        {
            "label": np.asarray(class_names, dtype=object)[best],
            "probability": probabilities[np.arange(len(best)), best],
        }
    )
    columns = {f"prob_{name}": probabilities[:, i] for i, name in enumerate(class_names)}
    return pd.concat([table, pd.DataFrame(columns)], axis=1)


def output_schema(class_names: list[str]) -> Schema:
    return Schema(
        [ColSpec("string", "label"), ColSpec("float", "probability")]
        + [ColSpec("float", f"prob_{name}") for name in class_names]
    )


def signature(spec: ModelSpec) -> ModelSignature:
    """Outputs only: see the module's docstring for why no input schema."""
    return ModelSignature(outputs=output_schema(spec.class_names))


class DigitModel(mlflow.pyfunc.PythonModel):
    """The served model: images in, label + probabilities out."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        self.net, self.spec = load_model(Path(context.artifacts[MODEL_ARTIFACT]))

    def predict(
        self,
        context: mlflow.pyfunc.PythonModelContext,
        model_input: np.ndarray,  # or a DataFrame; MLflow reads a union as a schema to enforce
        params: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        images = as_images(model_input, self.spec)[:, 0]
        probabilities = predict_probabilities(self.net, images, BATCH, self.spec.test_time_shift)
        return prediction_table(probabilities, self.spec.class_names)


# `train` logs this file as the model's code; MLflow runs it under a module name of its own
# (when logging and when loading), and then it names the model to serve.
if __name__ != "digitpipe.tracking.serving":
    set_model(DigitModel())
