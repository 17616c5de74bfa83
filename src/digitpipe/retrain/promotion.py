"""Promotion in the model registry: register a pipeline run's model, check a version loads and
predicts, record a judgement as version tags and move the `champion` alias.

A version is checked to load and predict before the alias moves, so `champion` never points at
a broken model.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
import mlflow.pyfunc
import numpy as np
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils import logging_utils

from digitpipe.core.errors import DigitpipeError
from digitpipe.tracking.registry import CHAMPION
from digitpipe.tracking.runs import RunRef

MAX_TAG = 5000  # MLflow's limit on a model version tag's value


def registered_version(client: MlflowClient, name: str, ref: RunRef) -> str:
    """The version holding this run's model, registering it on first sight."""
    for version in client.search_model_versions(f"name = '{name}' and run_id = '{ref.run_id}'"):
        return str(version.version)
    if ref.model_uri is None:
        raise DigitpipeError(f"run {ref.run_id} has no logged model; rerun the train stage.")
    with registry_notes_silenced():
        return str(mlflow.register_model(ref.model_uri, name).version)


@contextmanager
def registry_notes_silenced() -> Iterator[None]:
    """Without MLflow's "Successfully registered model ..." and "Created version ..." lines: a
    schedule's log wants the retrain's decision alone. MLflow prints them to its own stream, not
    through logging (so logger levels cannot), and its errors still raise."""
    stream = logging_utils.MLFLOW_LOGGING_STREAM
    enabled, stream.enabled = stream.enabled, False
    try:
        yield
    finally:
        stream.enabled = enabled


def champion_version(client: MlflowClient, name: str) -> ModelVersion | None:
    """The version the ``champion`` alias points at, if any."""
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def check_loads(name: str, version: str, example: np.ndarray) -> None:
    """Load the version as MLflow would serve it and predict; raise if it cannot."""
    try:
        with tempfile.TemporaryDirectory() as tmp:  # MLflow's own download folder is never removed
            model = mlflow.pyfunc.load_model(f"models:/{name}/{version}", dst_path=tmp)
            prediction = model.predict(example)
        # A table (label, probabilities) or an array of probabilities: its numbers must be finite.
        numbers = (
            prediction.select_dtypes("number").to_numpy(float)
            if hasattr(prediction, "select_dtypes")
            else np.asarray(prediction, float)
        )
    except Exception as exc:  # any failure means: do not promote
        raise DigitpipeError(
            f"model {name} version {version} does not load or predict ({exc}); "
            "the champion stays where it was."
        ) from exc
    if len(numbers) != len(example) or not numbers.size or not np.isfinite(numbers).all():
        raise DigitpipeError(
            f"model {name} version {version} predicted malformed output of shape "
            f"{numbers.shape} for {len(example)} images; the champion stays where it was."
        )


def run_json(client: MlflowClient, run_id: str, path: str) -> dict | None:
    """A JSON artifact of a run (``folder/name.json``), or None when the run has none."""
    folder = path.rsplit("/", 1)[0] if "/" in path else ""
    if path not in {item.path for item in client.list_artifacts(run_id, folder or None)}:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        return json.loads(Path(client.download_artifacts(run_id, path, tmp)).read_text())


def record(
    client: MlflowClient, name: str, version: str, tags: dict[str, str], promote: bool
) -> None:
    """Tag the version with its judgement, then move the alias to it if it won."""
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value[:MAX_TAG])
    if promote:
        client.set_registered_model_alias(name, CHAMPION, version)
