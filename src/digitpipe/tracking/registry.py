"""The model registry: register a pipeline run's model, fetch a version's safetensors weights,
record a judgement as version tags and move the `champion` alias.

A version is checked to load and predict before the alias moves, so `champion` never points at
a broken model.
"""

from __future__ import annotations

import json
import re
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

from digitpipe.core.errors import DigitpipeError, excerpt
from digitpipe.core.paths import SPEC_FILE, WEIGHTS_FILE
from digitpipe.tracking.runs import WEIGHTS_ARTIFACTS, RunRef
from digitpipe.tracking.store import ensure_reachable, shown

CHAMPION = "champion"
MAX_TAG = 5000  # MLflow's limit on a model version tag's value
# The registry's answers for a name, version or alias it does not have (MLflow 3.x answers a
# missing alias with INVALID_PARAMETER_VALUE, from SQLite and from a server alike).
NOT_FOUND = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")
MAX_LISTED = 10  # registered models or versions a message lists


def download_weights(uri: str, tracking: str, dst: Path) -> Path:
    """Download the safetensors weights and spec behind ``models:/NAME@ALIAS`` or
    ``models:/NAME/VERSION`` into ``dst`` (the caller's folder, which it removes); return the
    folder (loadable without unpickling)."""
    match = re.fullmatch(r"models:/([^/@]+)(?:@([\w-]+)|/(\d+))", uri)
    if match is None:
        raise DigitpipeError(
            f"--model-uri {uri!r}: expected models:/NAME@ALIAS (e.g. models:/digitpipe@champion) "
            "or models:/NAME/VERSION."
        )
    name, alias, number = match.groups()
    ensure_reachable(tracking, write=False)  # a dead server: one message in seconds
    try:
        client = MlflowClient(tracking)
        version = _find_version(client, name, alias, number)
        if version is None:
            wanted = f"alias {alias!r}" if alias else f"version {number}"
            raise DigitpipeError(f"{uri}: {_absent(client, tracking, name, wanted)}.")
        missing = no_weights(client, version)
        if missing:
            raise DigitpipeError(
                f"{uri}: version {version.version} is no digitpipe model: {missing}; "
                "digitpipe loads the versions digitpipe retrain registers, whose run logged "
                f"{WEIGHTS_ARTIFACTS}/{WEIGHTS_FILE} and {WEIGHTS_ARTIFACTS}/{SPEC_FILE}."
            )
        folder = client.download_artifacts(version.run_id, WEIGHTS_ARTIFACTS, str(dst))
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise DigitpipeError(
                f"{uri}: not found in the tracking store {shown(tracking)} ({exc})."
            ) from exc
        raise DigitpipeError(
            f"{uri}: the tracking store {shown(tracking)} failed to serve it ({exc.message}); "
            "check that it is up and reachable, then retry."
        ) from exc
    return Path(folder)


def no_weights(client: MlflowClient, version: ModelVersion) -> str | None:
    """Why the digitpipe weights of ``version`` cannot be fetched from its run, or None."""
    if not version.run_id:
        return "it has no run (it was registered from elsewhere)"
    logged = {item.path for item in client.list_artifacts(version.run_id, WEIGHTS_ARTIFACTS)}
    if f"{WEIGHTS_ARTIFACTS}/{WEIGHTS_FILE}" not in logged:
        return f"its run {version.run_id} logged no {WEIGHTS_ARTIFACTS}/{WEIGHTS_FILE}"
    return None


def _find_version(
    client: MlflowClient, name: str, alias: str | None, number: str | None
) -> ModelVersion | None:
    """The version of ``name`` with ``alias``, else ``number``; None when the registry answers
    that it has no such model or version (any other failure is raised)."""
    try:
        if alias:
            return client.get_model_version_by_alias(name, alias)
        return client.get_model_version(name, number)
    except MlflowException as exc:
        if exc.error_code in NOT_FOUND:
            return None
        raise


def _absent(client: MlflowClient, tracking: str, name: str, wanted: str) -> str:
    """What the store lacks (``wanted`` of model ``name``, or the model), and what it has."""
    try:
        model = client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        names = [found.name for found in client.search_registered_models(max_results=MAX_LISTED)]
        return (
            f"the tracking store {shown(tracking)} has no registered model {name!r} (it has: "
            f"{excerpt(', '.join(names) or 'none', 200, quote=False)}); check the name, or "
            "register one with digitpipe retrain"
        )
    numbers = [str(version.version) for version in versions(client, name)][-MAX_LISTED:]
    if not numbers:
        return (
            f"registered model {name!r} has no {wanted}, nor any version yet; digitpipe retrain "
            f"registers each run's model and sets @{CHAMPION} when it promotes one"
        )
    aliases = ", ".join(f"@{alias} (version {number})" for alias, number in model.aliases.items())
    return (
        f"registered model {name!r} has no {wanted} (aliases: {aliases or 'none'}; newest "
        f"versions: {', '.join(numbers)}); ask for one of those, as "
        f"models:/{name}@ALIAS or models:/{name}/VERSION (digitpipe retrain sets @{CHAMPION} "
        "when it promotes a version)"
    )


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
        prediction = mlflow.pyfunc.load_model(f"models:/{name}/{version}").predict(example)
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


def versions(client: MlflowClient, name: str) -> list[ModelVersion]:
    """Every version of the registered model, oldest first."""
    try:
        found = client.search_model_versions(f"name = '{name}'")
    except MlflowException:
        return []
    return sorted(found, key=lambda version: int(version.version))
