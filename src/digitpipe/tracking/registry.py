"""The model registry: register a pipeline run's model, promote it to `champion` if it wins.

Every decision is recorded as tags on the new version. A version is checked to load and predict
before the alias moves, so `champion` never points at a broken model.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
import mlflow.pyfunc
import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from digitpipe.core.errors import DigitpipeError
from digitpipe.tracking.runs import WEIGHTS_ARTIFACTS, RunRef

CHAMPION = "champion"
ACCURACY_TAG = "test_accuracy"


@dataclass(frozen=True)
class Decision:
    """What happened to one model version."""

    version: str
    promoted: bool
    reason: str
    accuracy: float
    champion_accuracy: float | None


def download_weights(uri: str, tracking: str) -> Path:
    """Download the safetensors weights and spec behind ``models:/NAME@ALIAS`` or
    ``models:/NAME/VERSION``; return the folder (loadable without unpickling)."""
    match = re.fullmatch(r"models:/([^/@]+)(?:@([\w-]+)|/(\d+))", uri)
    if match is None:
        raise DigitpipeError(
            f"--model-uri {uri!r}: expected models:/NAME@ALIAS (e.g. models:/digitpipe@champion) "
            "or models:/NAME/VERSION."
        )
    name, alias, number = match.groups()
    client = MlflowClient(tracking)
    try:
        version = (
            client.get_model_version_by_alias(name, alias)
            if alias
            else client.get_model_version(name, number)
        )
        folder = client.download_artifacts(version.run_id, WEIGHTS_ARTIFACTS, tempfile.mkdtemp())
    except MlflowException as exc:
        raise DigitpipeError(f"{uri}: not found in the tracking store {tracking} ({exc}).") from exc
    return Path(folder)


def registered_version(client: MlflowClient, name: str, ref: RunRef) -> str:
    """The version holding this run's model, registering it on first sight."""
    for version in client.search_model_versions(f"name = '{name}' and run_id = '{ref.run_id}'"):
        return str(version.version)
    if ref.model_uri is None:
        raise DigitpipeError(f"run {ref.run_id} has no logged model; rerun the train stage.")
    return str(mlflow.register_model(ref.model_uri, name).version)


def champion(client: MlflowClient, name: str) -> tuple[str, float] | None:
    """The champion's version and its recorded test accuracy, if there is one."""
    try:
        version = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None
    return str(version.version), float(version.tags[ACCURACY_TAG])


def check_loads(name: str, version: str, example: np.ndarray) -> None:
    """Load the version as MLflow would serve it and predict; raise if it cannot."""
    try:
        probabilities = np.asarray(
            mlflow.pyfunc.load_model(f"models:/{name}/{version}").predict(example)
        )
    except Exception as exc:  # any failure means: do not promote
        raise DigitpipeError(
            f"model {name} version {version} does not load or predict ({exc}); "
            "the champion stays where it was."
        ) from exc
    if probabilities.shape[0] != len(example) or not np.isfinite(probabilities).all():
        raise DigitpipeError(
            f"model {name} version {version} predicted malformed output "
            f"{probabilities.shape}; the champion stays where it was."
        )


def decide(ref: RunRef, name: str, accuracy: float, margin: float, example: np.ndarray) -> Decision:
    """Register the run's model and promote it when it beats the champion by ``margin``."""
    mlflow.set_tracking_uri(ref.tracking_uri)
    client = MlflowClient(ref.tracking_uri)
    version = registered_version(client, name, ref)
    current = champion(client, name)
    if current is not None and current[0] == version:
        reason = f"version {version} is already the champion: the pipeline did not change"
        return Decision(version, False, reason, accuracy, current[1])
    if current is None:
        promote, reason = True, "first model: no champion yet"
    elif accuracy > current[1] + margin:
        promote, reason = (
            True,
            (
                f"test accuracy {accuracy:.4f} beats champion version "
                f"{current[0]} ({current[1]:.4f}) by more than {margin}"
            ),
        )
    else:
        promote, reason = (
            False,
            (
                f"test accuracy {accuracy:.4f} does not beat champion "
                f"version {current[0]} ({current[1]:.4f}) by more than {margin}"
            ),
        )
    tags = {
        ACCURACY_TAG: f"{accuracy:.6f}",
        "decision": "promoted" if promote else "kept",
        "reason": reason,
        "champion_accuracy": "" if current is None else f"{current[1]:.6f}",
    }
    if promote:
        check_loads(name, version, example)
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    if promote:
        client.set_registered_model_alias(name, CHAMPION, version)
    return Decision(version, promote, reason, accuracy, None if current is None else current[1])
